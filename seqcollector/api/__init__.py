"""The read API, /metrics, /health and /ready, served by Litestar under uvicorn."""
