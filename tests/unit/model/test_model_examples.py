from pathlib import Path

import pytest

from plait.model import parse_documents

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.mark.parametrize("name, kinds", [
    ("canary.yaml", ["DestinationRule", "VirtualService"]),
    ("fault-injection.yaml", ["VirtualService"]),
    ("external-db.yaml", ["ServiceEntry", "DestinationRule"]),
])
def test_examples_are_valid(name, kinds):
    assert [r.kind for r in parse_documents((EXAMPLES / name).read_text())] == kinds
