"""Quantities: YAML numbers to the strings Kubernetes wants, and strings back to numbers."""

import pytest

from daemonpool_operator import quantities


@pytest.mark.parametrize(
    "number, text",
    [(1, "1"), (2.0, "2"), (0.5, "0.5"), (0.25, "0.25"), (1.125, "1.125"), (0.001, "0.001"), (10.0, "10")],
)
def test_quantity_string(number, text):
    assert quantities.quantity_string(number) == text


@pytest.mark.parametrize("value", [True, "1Gi", None, [1]])
def test_quantity_string_leaves_what_is_not_a_number(value):
    assert quantities.quantity_string(value) == value


@pytest.mark.parametrize(
    "text, value",
    [("500m", 0.5), ("1Gi", 2**30), ("1G", 1e9), ("2Ki", 2048), ("1.5", 1.5), ("0.1m", 0.0001), (3, 3)],
)
def test_quantity_values(text, value):
    assert quantities.quantity(text) == pytest.approx(value)
