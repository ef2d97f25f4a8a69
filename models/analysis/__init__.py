"""Face analysers: detection, landmarks, embeddings (dlib built-in and insightface buffalo_l)."""
