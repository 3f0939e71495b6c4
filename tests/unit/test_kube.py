"""What kube.py makes of the API server's refusals and throttling (operator/daemonpool_operator/kube.py):
Retry-After is honoured within bounds (before: 429 and 503 with Retry-After: 30 were retried every 2 s)."""

import pytest
from kubernetes.client.exceptions import ApiException

from daemonpool_operator import kube


@pytest.mark.parametrize(
    "headers, delay",
    [
        ({"Retry-After": "30"}, 30.0),
        ({"retry-after": "7"}, 7.0),
        ({"Retry-After": "0"}, kube.RETRY_DELAY),
        ({"Retry-After": "100000"}, kube.MAX_RETRY_AFTER),
        ({"Retry-After": "nan"}, kube.RETRY_DELAY),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, kube.RETRY_DELAY),
        ({}, kube.RETRY_DELAY),
        (None, kube.RETRY_DELAY),
    ],
)
def test_retry_after_is_honoured_within_bounds(headers, delay):
    assert kube.retry_after(headers) == delay


@pytest.mark.parametrize("status", [429, 503])
def test_a_throttled_request_waits_as_long_as_the_server_asks(status):
    exc = ApiException(status=status, reason="Too Many Requests")
    exc.headers = {"Retry-After": "30"}
    with pytest.raises(kube.Transient) as e:
        kube._retryable(exc, "patching pool ns/p")
    assert e.value.delay == 30.0 and "retrying in 30s" in str(e.value)


def test_a_refusal_is_rejected_with_the_servers_message():
    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = '{"message": "spec.replicas: Invalid value"}'
    exc.headers = {}
    with pytest.raises(kube.Rejected) as e:
        kube._retryable(exc, "x")
    assert (e.value.status, e.value.message) == (422, "spec.replicas: Invalid value")
