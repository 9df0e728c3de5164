"""Starting the fill function for a FillJob: an asynchronous Lambda invocation carrying the job and the lease."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from core.errors import Unavailable
from core.ports import FillJob


def fill_event(job: FillJob, lease_owner: str) -> dict[str, str]:
    return {"name": job.name, "digest": str(job.digest), "lease_owner": lease_owner}


class LambdaDispatcher:
    """The API function's way to start the fill function. The fill function builds the same cache but never
    dispatches, so it has no function name to give; the client is made on first use."""

    def __init__(self, make_client: Callable[[], Any], function_name: str | None) -> None:
        self._make_client = make_client
        self._function_name = function_name
        self._client: Any = None

    def dispatch(self, job: FillJob, lease_owner: str) -> None:
        if not self._function_name:
            raise Unavailable("no fill function is configured (PULLTHROUGH_FILL_FUNCTION_NAME)")
        if self._client is None:
            self._client = self._make_client()
        try:
            self._client.invoke(
                FunctionName=self._function_name,
                InvocationType="Event",  # retried by Lambda on failure; the lease makes a retry harmless
                Payload=json.dumps(fill_event(job, lease_owner)).encode(),
            )
        except ClientError as exc:
            raise Unavailable("could not start the fill function") from exc
