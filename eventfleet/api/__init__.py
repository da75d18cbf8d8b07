"""The HTTP API (``eventfleet api``): an ASGI app on the asyncio client for services that are not
Python: top-ups, items and orders with idempotency keys, long-polled outcomes, read-your-writes
reads, bearer tokens that are a producer identity's Redis credentials, RFC 9457 problems,
Prometheus metrics. Needs the ``api`` extra (FastAPI, uvicorn): ``pip install 'eventfleet[api]'``.
"""
