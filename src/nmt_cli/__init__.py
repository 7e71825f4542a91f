"""nmt: neural machine translation from the command line, on the Keras functional API."""

__version__ = "0.2.0"
