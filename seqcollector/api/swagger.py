"""Swagger UI at `/swagger/` (and `/swagger/index.html`) and the OpenAPI document at
`/swagger/doc.json`, the Go collector's paths. The UI's assets come from the npm package
swagger-ui-dist in the repository's node_modules (`make setup` runs `npm ci`), served at
`/swagger/assets/`: no CDN, so the page works where the network reaches only the API.
Without them `/swagger/` answers 503 with a JSON error saying to run `make setup`."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

from litestar import Request, get
from litestar.enums import MediaType
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin
from litestar.params import FromPath
from litestar.response import File

import seqcollector
from seqcollector.api.errors import ApiError

ASSETS_DIR = Path(seqcollector.__file__).resolve().parents[1] / "node_modules" / "swagger-ui-dist"
ASSETS = (
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "favicon-16x16.png",
    "favicon-32x32.png",
)
DOC_PATH = "/swagger/doc.json"

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title}</title>
  <link rel="stylesheet" href="/swagger/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="/swagger/assets/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/swagger/assets/swagger-ui-bundle.js"></script>
  <script src="/swagger/assets/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "{doc}",
      dom_id: "#swagger-ui",
      deepLinking: true,
      docExpansion: "none",
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout"
    }});
  </script>
</body>
</html>
"""


def _missing_assets() -> ApiError:
    return ApiError(
        503,
        f"Swagger UI assets not found in {ASSETS_DIR}: run `make setup` (npm ci installs "
        "swagger-ui-dist); the document itself is at /swagger/doc.json",
    )


class LocalSwaggerPlugin(OpenAPIRenderPlugin):
    """The UI page, loading the document from /swagger/doc.json and the local assets."""

    def __init__(self) -> None:
        super().__init__(path=["/", "/index.html"], media_type=MediaType.HTML)

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if not (ASSETS_DIR / "swagger-ui-bundle.js").is_file():
            raise _missing_assets()
        title = str(openapi_schema.get("info", {}).get("title", "API"))
        return _PAGE.format(title=title, doc=DOC_PATH).encode()


def render_plugins() -> list[OpenAPIRenderPlugin]:
    return [LocalSwaggerPlugin(), JsonRenderPlugin(path="/doc.json", media_type=MediaType.JSON)]


@get("/swagger/assets/{name:str}", include_in_schema=False, sync_to_thread=False)
def swagger_asset(name: FromPath[str]) -> File:
    """One file of swagger-ui-dist (those the page loads, nothing else)."""
    if name not in ASSETS:
        raise ApiError(404, f"No Swagger UI asset {name!r}")
    path = ASSETS_DIR / name
    if not path.is_file():
        raise _missing_assets()
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return File(path, media_type=media_type, content_disposition_type="inline")
