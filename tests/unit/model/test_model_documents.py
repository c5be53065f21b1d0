import pytest

from plait.core.errors import ConfigError
from plait.model import DocumentError, parse_documents


def test_multi_document_yaml(texts):
    VS, DR, SE = texts
    resources = parse_documents(f"{VS}\n---\n{DR}\n---\n{SE}\n---\n")
    assert [r.kind for r in resources] == ["VirtualService", "DestinationRule", "ServiceEntry"]


def test_empty_input_is_no_resources():
    assert parse_documents("") == []
    assert parse_documents("---\n---\n# only a comment\n") == []


def test_bad_document_is_named(texts):
    VS, DR, _ = texts
    text = f"{VS}\n---\n{DR.replace('name: v2', 'name: v1')}"
    with pytest.raises(DocumentError) as err:
        parse_documents(text)
    assert err.value.document == 2
    assert err.value.path == "spec.subsets[1].name"


def test_yaml_syntax_error_has_position():
    with pytest.raises(ConfigError) as err:
        parse_documents("kind: VirtualService\nspec: [unclosed\n")
    assert "invalid YAML" in err.value.reason and "line" in err.value.reason


def test_unsafe_yaml_tags_are_refused():
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_documents("!!python/object/apply:os.system ['true']")
