"""The Gradio studio: one small module per tab, each wired to the service functions in
`brushpen.generators` that the CLI and the REST API call too. `brushpen studio` mounts it on the
API's FastAPI app (`gr.mount_gradio_app`), so one server serves both."""

from __future__ import annotations

import os

import gradio as gr

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def build_studio(api_key: str | None = None) -> gr.Blocks:
    """The studio's Blocks. `api_key` is enforced by the login page `brushpen studio` mounts."""
    from brushpen.studio_ui import (checker_tab, copy_tab, export_tab, finetune_tab, history_tab, images_tab,
                                    models_tab)

    # Uploads and outputs Gradio keeps go under $BRUSHPEN_HOME (brushpen studio sets GRADIO_TEMP_DIR
    # there before Gradio is imported); files older than an hour are deleted every ten minutes.
    with gr.Blocks(title="brushpen studio", delete_cache=(600, 3600)) as blocks:
        gr.Markdown("# brushpen studio\nImages, copy and the deepfake checker, on this machine; "
                    "edge exports and LoRA fine-tuning of each model.")
        with gr.Tabs() as tabs:
            images = images_tab.build()
            copy_tab.build()
            checker = checker_tab.build()
            history_tab.build(images, tabs)
            models_tab.build()
            export_tab.build()
            finetune_tab.build()
        images.to_checker.click(checker_tab.receive, images.paths, [checker, tabs], concurrency_id="light")
    blocks.queue(default_concurrency_limit=1, max_size=64)
    # Gradio embeds its API info (each event's schema: model and adapter names among them) in every
    # page it serves, the login page too. "undocumented" leaves our events out of it unless a page
    # is asked for `?all_endpoints=...`, which `brushpen studio` strips (studio_cmd.NoAllEndpoints).
    # They stay callable after login, by the page and by gradio_client. Integrators have /v1.
    for fn in blocks.fns.values():
        fn.api_visibility = "undocumented"
    return blocks
