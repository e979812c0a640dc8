"""Cursor paging of jobs (what OpenAI's `GET /v1/videos?after=` needs) on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from wanserve.errors import InvalidRequestError, JobNotFoundError
from wanserve.jobs.service import JobSubmission


def submit(service, prompt: str, owner: str = "") -> str:
    view, _ = service.create_job(JobSubmission(params={"prompt": prompt, "num_inference_steps": 2}, owner_key=owner))
    return view.id


def test_list_jobs_after_pages_both_orders(db_url, make_service):
    service = make_service(db_url)
    ids = [submit(service, f"clip {i}") for i in range(5)]

    first, more = service.list_jobs_after(limit=2)
    assert [v.id for v in first] == ids[::-1][:2] and more
    second, more = service.list_jobs_after(first[-1].id, limit=2)
    assert [v.id for v in second] == ids[::-1][2:4] and more
    last, more = service.list_jobs_after(second[-1].id, limit=2)
    assert [v.id for v in last] == ids[:1] and not more

    oldest, more = service.list_jobs_after(ids[1], limit=10, ascending=True)
    assert [v.id for v in oldest] == ids[2:] and not more


def test_list_jobs_after_owner_and_bad_cursor(db_url, make_service):
    service = make_service(db_url)
    mine = submit(service, "mine", owner="a")
    theirs = submit(service, "theirs", owner="b")
    page, _ = service.list_jobs_after(owner_key="a")
    assert [v.id for v in page] == [mine]
    with pytest.raises(JobNotFoundError):
        service.list_jobs_after(theirs, owner_key="a")  # another owner's job is no cursor
    with pytest.raises(InvalidRequestError, match="`limit` must be between 1 and 1000, got 0"):
        service.list_jobs_after(limit=0)
