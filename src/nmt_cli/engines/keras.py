"""The Keras engine: the trained encoder and one-step decoder models, searched by `decoding.py`.

It serves every architecture and every checkpoint. Loading it loads TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from nmt_cli import backend
from nmt_cli.checkpoints import inference_models_of_best
from nmt_cli.errors import UserError

if TYPE_CHECKING:
    from nmt_cli.engines import NBest, Sampling
    from nmt_cli.trained import TrainedModel


class KerasEngine:
    name = "keras"

    def __init__(
        self, model: TrainedModel, threads: int = 0, length_penalty: float = 1.0, sampling: Sampling | None = None
    ):
        backend.load_tensorflow(threads)
        from nmt_cli.decoding import Searcher

        self.model, self.model_config = model, model.config.model
        self.search_settings = {"length_alpha": length_penalty, "sampling": sampling}
        self.training = None  # the training model, once a checkpoint has been loaded whole
        if model.checkpoint == model.workspace.best and inference_models_of_best(model.workspace):
            # The saved inference models are best.keras' own: loading them skips the training graph.
            from nmt_cli.models import load_keras_model

            encoder, decoder = load_keras_model(model.workspace.encoder), load_keras_model(model.workspace.decoder)
            self.searcher = Searcher(encoder, decoder, **self.search_settings)
            return
        self.load_checkpoint(model.checkpoint)

    def load_checkpoint(self, checkpoint: Path) -> None:
        """The first checkpoint is loaded whole; later ones only put their weights into the same
        layers, so the compiled search is kept."""
        from nmt_cli.decoding import Searcher
        from nmt_cli.models import load_checkpoint

        if self.training is None:
            models = load_checkpoint(checkpoint, self.model_config)
            self.training = models.training
            self.searcher = Searcher(models.encoder, models.decoder, **self.search_settings)
            return
        try:
            self.training.load_weights(checkpoint)
        except Exception as error:  # noqa: BLE001 - Keras raises many kinds for a damaged or foreign file
            raise UserError(f"cannot load the weights of {checkpoint}: {str(error).splitlines()[0]}") from None

    def search_all(
        self,
        sources: list[list[int]],
        beam_size: int,
        n_best: int = 1,
        on_progress: Callable[[int], None] | None = None,
        attention: bool = False,
    ) -> list[NBest]:
        """The searcher's own (`decoding.Searcher.search_all`), for the weights loaded last."""
        if attention and not self.searcher.attends:
            self.model.check_attention()  # refuses an architecture without attention
            # decoder.keras was saved before decoders gave attention: the checkpoint's graph does.
            self.load_checkpoint(self.model.checkpoint)
        return self.searcher.search_all(sources, beam_size, n_best, on_progress, attention)

    @property
    def score_all(self):
        """The searcher's forced decoding (`decoding.Searcher.score_all`)."""
        return self.searcher.score_all
