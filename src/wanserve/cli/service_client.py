"""A small client of a running wanserve service, for `wanserve bench serve` and `wanserve doctor --url`:
health, submit a job, follow it to its end (server-sent events), read `/metrics`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx

logger = logging.getLogger(__name__)

FINAL_STATUSES = ("succeeded", "failed", "cancelled", "expired")


class ServiceError(Exception):
    """The service could not be reached, or answered with an error (the message says which and why)."""


@dataclass
class ServiceClient:
    """Talks to the service at `url` (for example `http://127.0.0.1:8000`)."""

    url: str
    api_key: str | None = None
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ServiceError(f"`url` must be an http(s) URL, got {self.url!r}")
        self.url = self.url.rstrip("/")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout_s, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach {self.url}{path}: {exc}") from None

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of `/health`: 200 when jobs can run, 503 while starting or broken."""
        response = self._request("GET", "/health")
        try:
            return response.status_code, response.json()
        except ValueError:
            raise ServiceError(f"{self.url}/health answered {response.status_code} without JSON") from None

    def metrics(self) -> str:
        """The Prometheus text of `/metrics`."""
        response = self._request("GET", "/metrics")
        if response.status_code != 200:
            raise ServiceError(f"{self.url}/metrics answered {response.status_code}")
        return response.text

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        """Creates a job (`POST /v1/jobs`); the service's error message when it refuses."""
        response = self._request("POST", "/v1/jobs", json=body)
        if response.status_code not in (200, 201):
            raise ServiceError(f"job refused ({response.status_code}): {_error_message(response)}")
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        response = self._request("GET", f"/v1/jobs/{job_id}")
        if response.status_code != 200:
            raise ServiceError(f"job {job_id}: {response.status_code} {_error_message(response)}")
        return response.json()

    def wait(self, job_id: str, timeout_s: float) -> dict[str, Any]:
        """Follows the job's event stream until its final status; returns the job."""
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout_s) as response:
                if response.status_code != 200:
                    raise ServiceError(f"events of job {job_id}: {response.status_code}")
                for line in response.iter_lines():
                    if line.startswith("data:") and json.loads(line[5:]).get("status") in FINAL_STATUSES:
                        break
        except httpx.HTTPError as exc:
            raise ServiceError(f"following job {job_id}: {exc}") from None
        return self.job(job_id)


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    error = body.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(body.get("detail", body))[:500]
