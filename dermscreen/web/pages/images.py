"""Image files for the pages: the stored image, a thumbnail and the heatmap, each tenant-checked."""

from __future__ import annotations

import io
import mimetypes

from flask import abort, current_app, send_file
from PIL import Image as PILImage

from dermscreen.db.screening import Image
from dermscreen.db.tenancy import Role
from dermscreen.storage import ObjectMissing, store_for
from dermscreen.web.auth.access import role_required, tenant_get
from dermscreen.web.pages import bp

ANYONE = (Role.SUBMITTER, Role.DERMATOLOGIST, Role.ADMIN)
THUMBNAIL_SIZE = (112, 112)
PRIVATE_CACHE = 300  # seconds a browser may keep an image (private: never a shared cache)


def stored_file(ref: str | None) -> io.BytesIO:
    """The bytes of the object a row points to, read from the store; 404 when it is missing."""
    if not ref:
        abort(404)
    try:
        return io.BytesIO(store_for(current_app.config["DERMSCREEN"]).read(ref))
    except ObjectMissing:
        abort(404)


def _private(response):
    response.cache_control.private = True
    response.cache_control.max_age = PRIVATE_CACHE
    return response


@bp.route("/images/<image_id>/original")
@role_required(*ANYONE)
def image_file(image_id: str):
    image = tenant_get(Image, image_id)
    return _private(send_file(stored_file(image.stored_path),
                              mimetype=mimetypes.guess_type(image.stored_path)[0]))


@bp.route("/images/<image_id>/thumbnail")
@role_required(*ANYONE)
def image_thumbnail(image_id: str):
    image = tenant_get(Image, image_id)
    with PILImage.open(stored_file(image.stored_path)) as opened:
        opened.thumbnail(THUMBNAIL_SIZE)
        buffer = io.BytesIO()
        opened.convert("RGB").save(buffer, format="JPEG", quality=85)
    buffer.seek(0)
    return _private(send_file(buffer, mimetype="image/jpeg"))


@bp.route("/images/<image_id>/heatmap")
@role_required(*ANYONE)
def image_heatmap(image_id: str):
    image = tenant_get(Image, image_id)
    return _private(send_file(stored_file(image.heatmap_path), mimetype="image/png"))
