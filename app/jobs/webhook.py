"""Webhook on completion: POST the final job JSON to the URL given at submit, with bounded retries and exponential
backoff, from a background thread (never blocking a request or the runner)."""

from __future__ import annotations

import logging
import threading
import time

import httpx

log = logging.getLogger("app.jobs.webhook")


def deliver(url: str, payload: str, job_id: str, retries: int, timeout: float, backoff: float = 0.5) -> bool:
    """Up to ``1 + retries`` attempts; a 2xx answer ends it. Waits backoff, 2×backoff, 4×backoff… between tries."""
    for attempt in range(retries + 1):
        try:
            r = httpx.post(url, content=payload, timeout=timeout,
                           headers={"Content-Type": "application/json", "X-Job-Id": job_id})
            if 200 <= r.status_code < 300:
                log.info("webhook delivered", extra={"job_id": job_id, "attempt": attempt + 1})
                return True
            reason = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        log.warning("webhook failed", extra={"job_id": job_id, "attempt": attempt + 1, "reason": reason})
        if attempt < retries:
            time.sleep(backoff * 2**attempt)
    return False


def send_in_background(url: str, payload: str, job_id: str, retries: int, timeout: float) -> threading.Thread:
    t = threading.Thread(target=deliver, args=(url, payload, job_id, retries, timeout), daemon=True,
                         name=f"webhook-{job_id[:8]}")
    t.start()
    return t
