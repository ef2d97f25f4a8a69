"""Long work as jobs: ``Prefer: respond-async`` → 202 + ``Location: /jobs/{id}``; see app/routers/jobs.py."""

from app.jobs.models import ASYNC_RESPONSE
from app.jobs.registry import InputSpec, JobCanceled, JobContext, JobKind, JobOutput
from app.jobs.submit import submit, wants_async

__all__ = ["ASYNC_RESPONSE", "InputSpec", "JobCanceled", "JobContext", "JobKind", "JobOutput", "submit", "wants_async"]
