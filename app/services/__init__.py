"""One module per job; each orchestrates decode → models → encode and knows nothing of HTTP."""
