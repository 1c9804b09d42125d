"""The REST API: OpenAI-shaped routes for images, copy and batch jobs over the generator services.

`create_app()` builds the FastAPI app; `brushpen studio` serves it with the Gradio studio mounted
on the same app. This package never imports `studio_ui`: the command joins the two.
"""

from brushpen.api.app import ApiSettings, create_app

__all__ = ["ApiSettings", "create_app"]
