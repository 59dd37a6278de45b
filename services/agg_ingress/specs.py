"""The ingress's API documents (OpenAPI 3.1, ``docs/openapi/``), one per HTTP surface, and the
two routes that serve them: ``GET /v1/openapi`` (the index) and ``GET /v1/openapi/{name}``
(``NAME`` or ``NAME.yaml`` as YAML, ``NAME.json`` as JSON).

``docs/openapi/registry.yaml`` lists the documents; a new provider protocol adds its file and
one line there. The documents ship inside the package as ``agg_ingress/openapi`` (in the
repository a link to ``docs/openapi``, in a wheel a copy), so an installed ingress serves the
same bytes as a checkout; where the link is missing (a checkout without symbolic links) the
repository's ``docs/openapi`` is read instead. They are read and checked once, when the app is
built: a missing or broken document stops the start, not a request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

REGISTRY_FILE = "registry.yaml"
YAML_MEDIA_TYPE = "application/yaml"
INDEX_PATH = "/v1/openapi"


def documents_dir() -> Path:
    """Where the documents are: the package's copy, else the repository's ``docs/openapi``."""
    packaged = Path(str(resources.files("agg_ingress") / "openapi"))
    if (packaged / REGISTRY_FILE).is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "docs" / "openapi"


@dataclass(frozen=True)
class Document:
    """One API document: its registry entry and its two renderings."""

    name: str
    surface: str
    protocol: str | None
    title: str
    version: str
    yaml_bytes: bytes
    json_bytes: bytes

    @property
    def spec(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.json_bytes)
        return value

    def entry(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "surface": self.surface}
        if self.protocol is not None:
            out["protocol"] = self.protocol
        out.update(title=self.title, version=self.version,
                   yaml=f"{INDEX_PATH}/{self.name}.yaml",
                   json=f"{INDEX_PATH}/{self.name}.json")  # fmt: skip
        return out


def load_documents(directory: Path | None = None) -> dict[str, Document]:
    """Every registered document by name; ValueError naming the first that is not one."""
    root = directory or documents_dir()
    registry = yaml.safe_load((root / REGISTRY_FILE).read_text(encoding="utf-8"))
    found: dict[str, Document] = {}
    for item in registry["documents"]:
        name = str(item["name"])
        raw = (root / f"{name}.yaml").read_bytes()
        spec = yaml.safe_load(raw)
        if not isinstance(spec, dict) or not str(spec.get("openapi", "")).startswith("3.1"):
            raise ValueError(f"{name}.yaml: not an OpenAPI 3.1 document")
        if name in found:
            raise ValueError(f"{name}: registered twice")
        info = spec["info"]
        found[name] = Document(
            name=name,
            surface=str(item["surface"]),
            protocol=item.get("protocol"),
            title=str(info["title"]),
            version=str(info["version"]),
            yaml_bytes=raw,
            json_bytes=json.dumps(spec, ensure_ascii=False, separators=(",", ":")).encode(),
        )
    return found


class Specs:
    """The two handlers over documents read once."""

    def __init__(self, documents: dict[str, Document]):
        self.documents = documents
        index = {"documents": [d.entry() for d in documents.values()]}
        self.index_bytes = json.dumps(index, ensure_ascii=False).encode()

    async def index(self, request: Request) -> Response:
        return Response(self.index_bytes, 200, media_type="application/json")

    async def document(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        stem, dot, suffix = name.rpartition(".")
        if not dot:
            stem, suffix = name, "yaml"
        found = self.documents.get(stem)
        if found is not None and suffix == "yaml":
            return Response(found.yaml_bytes, 200, media_type=YAML_MEDIA_TYPE)
        if found is not None and suffix == "json":
            return Response(found.json_bytes, 200, media_type="application/json")
        return Response(b'{"status":"UNKNOWN_DOCUMENT"}', 404, media_type="application/json")


def routes(documents: dict[str, Document] | None = None) -> list[Route]:
    """The routes that serve the documents (``build_app`` adds them)."""
    specs = Specs(load_documents() if documents is None else documents)
    return [
        Route(INDEX_PATH, specs.index, methods=["GET"]),
        Route(INDEX_PATH + "/{name}", specs.document, methods=["GET"]),
    ]
