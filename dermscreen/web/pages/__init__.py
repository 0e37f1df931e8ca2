"""Pages for people: hospital uploads and results, cases with heatmaps and reviews, alerts, and the
review loop. Server-rendered; ``static/app.js`` adds drag and drop, progress polling and sorting.

    GET      /                        home (by role)
    GET      /batches                 the hospital's batches
    GET/POST /upload                  upload images or archives
    GET      /batches/<id>            progress, then results (sortable, CSV download)
    GET      /cases/<image id>        the case: image, heatmap, probabilities, review form
    GET      /alerts                  alerts inbox (open first)
    GET      /reviews                 model flags vs reviews; export of reviewed cases
"""

from flask import Blueprint

from dermscreen.web.auth.access import security_headers

bp = Blueprint("pages", __name__)
bp.after_request(security_headers)

from dermscreen.web.pages import alerts, batches, cases, feedback, images  # noqa: E402,F401
