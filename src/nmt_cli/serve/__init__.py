"""`nmt serve`: translation over HTTP with the model loaded once.

app.py       the endpoints (LibreTranslate's and the native API), errors, the web page
batching.py  the queue whose one worker thread owns the Translator and translates in batches
server.py    the listening socket, uvicorn, and the graceful stop
static/      the web page: plain HTML, CSS and JavaScript, nothing fetched from elsewhere
"""
