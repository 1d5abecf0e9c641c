"""The serving workload: a JAX model server with continuous batching over the training workload's
serving bundles.

- `generate`: continuous batches with a KV cache per slot, compiled ahead of time per bucket.
- `engine`: loads, compiles and warms up the newest (or a pinned) bundle, hot-reloads newer ones.
- `batcher`: the bounded queue and the worker that moves requests into the running batch.
- `protocol`: the completions API's request limits, response and OpenAPI description.
- `app`: the ASGI app (Starlette); `metrics`: Prometheus metrics and the JSON event log.
- `server`: uvicorn with a drain on SIGTERM; `serve()` for callers, `main` for the command line.
"""
