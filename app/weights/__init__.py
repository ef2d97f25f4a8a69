"""Model weights on disk: the manifest (``manifest``) and the downloader/verifier (``download``)."""
