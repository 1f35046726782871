"""The FastAPI retrieval service, its storage, in-memory index and bulk indexing job."""
