"""The whole page: the checkpoint quicksetting on top, then the tabs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from modules.generation.params import GenerationParams
from modules.jobs.model_switch import switch_checkpoint
from modules.jobs.queue import JobStatus, QueueStopped
from modules.jobs.generation_task import GenerationService
from modules.models.hints import ModelHints
from modules.models.manager import TINY_NOTICE, ModelManager
from modules.outputs.naming import user_folder
from modules.ui.common import Quicksettings, page_user
from modules.ui.img2img import build_img2img_tab
from modules.ui.localization import LOCALIZATION_HEAD, localized_markdown
from modules.ui.notifications import NOTIFICATIONS_HEAD
from modules.ui.models import build_models_tab
from modules.ui.extras import build_extras_tab
from modules.ui.extensions import build_app_extensions_tab
from modules.ui.forever import FOREVER_HEAD
from modules.ui.gallery import build_gallery_tab
from modules.ui.output_buttons import OutputActions, wire_output_buttons
from modules.outputs.save_button import SaveFolders
from modules.ui.pnginfo import build_pnginfo_tab
from modules.ui.send_to import SendTargets
from modules.ui.settings import build_settings_tab
from modules.ui.styles import STYLES_CSS
from modules.ui.train import build_train_tab
from modules.ui.txt2img import build_txt2img_tab
from modules.ui.extension_js import EXTENSION_JS_HEAD
from modules.ui.extension_tabs import render_extension_tabs
from modules.version import VERSION

if TYPE_CHECKING:
    from webui import App

CSS = """
.generate-button { min-height: 5.5em; }
.infotext p { font-family: monospace; font-size: 0.9em; white-space: normal; word-break: break-word; }
.models-downloads td, .models-downloads th { padding: 0.2em 0.6em; text-align: left; }
.models-bar { height: 0.4em; background: var(--neutral-200); border-radius: 0.2em; min-width: 8em; }
.models-bar > div { height: 100%; background: var(--color-accent); border-radius: 0.2em; }
.models-error { color: var(--error-text-color); }
#model_notice { border-left: 4px solid #d97706; padding-left: 0.8em; }
#model_guide_box { padding: 0.5em 0.8em; }
.token-counter { text-align: right; margin-top: -0.6em; }
.token-count { font-size: 0.8em; opacity: 0.7; font-family: monospace; }
"""

# A1111's prompt-box keys: Ctrl+Enter generates, Alt+Enter skips, Esc interrupts.
HEAD = """
<script>
document.addEventListener('keydown', (e) => {
  const box = e.target && e.target.closest && e.target.closest('#txt2img_prompt, #txt2img_neg_prompt, #img2img_prompt, #img2img_neg_prompt');
  if (!box) return;
  const tab = box.id.split('_')[0];
  let button = null;
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) button = 'generate';
  else if (e.key === 'Enter' && e.altKey) button = 'skip';
  else if (e.key === 'Escape') button = 'interrupt';
  if (!button) return;
  e.preventDefault();
  document.getElementById(tab + '_' + button)?.click();
});
</script>
"""
HEAD += FOREVER_HEAD  # right-click Generate: Generate forever
HEAD += EXTENSION_JS_HEAD  # A1111's gradioApp(), onUiLoaded(), ... before the extensions' scripts
HEAD += LOCALIZATION_HEAD  # the page's translator, when the page's HTML did not bring it already (modules/ui/localization.py)
HEAD += NOTIFICATIONS_HEAD  # a browser notification and a sound when a job ends in a background tab
CSS += STYLES_CSS  # the styles editor floats over the page


def _notice(models: ModelManager) -> dict:
    """The banner that says plainly when the tiny random-weights model is the one in use."""
    active = models.active
    tiny = active is not None and active.is_tiny_random
    return gr.update(value=f"**Tiny test model.** {TINY_NOTICE}" if tiny else "", visible=tiny)


def _hints(models: ModelManager) -> ModelHints:
    return models.hints()


def _hint_updates(fields: list[tuple[str, object]], new: ModelHints, old: ModelHints | None, translate=lambda text: text) -> list:
    """Show the model's guide and examples, and set the controls its defaults name.

    Controls a previous model's hints had set go back to the usual defaults, so leaving the
    64×64 demo model for a real one does not keep 64×64; other values the user chose stay. A
    default the user set in ui-config.json wins over the model's.
    """
    updates = [
        gr.update(visible=bool(new.guide or new.examples)),
        translate(new.guide),  # whole: the page's translator would split its sentences at every bold word
        gr.update(samples=[[e] for e in new.examples] or [[""]], visible=bool(new.examples)),
    ]
    for name, control in fields:
        usual = control.value  # the built-in default, or the user's own from ui-config.json
        if name in new.defaults and usual == GenerationParams.field_meta(name)["default"]:
            updates.append(gr.update(value=new.defaults[name]))
        elif old is not None and name in old.defaults:
            updates.append(gr.update(value=usual))
        else:
            updates.append(gr.update())
    return updates


def vae_choices(service: GenerationService) -> list[str]:
    vaes = service.libraries.vaes
    if vaes is None:
        return ["Automatic", "None"]
    vaes.refresh()
    return vaes.choices()


def _footer(device: str | None = None) -> str:
    return f"<div style='text-align:center;opacity:.6'>version {VERSION}{f' · {device}' if device else ''}</div>"


def build_page(app: "App") -> gr.Blocks:
    """The page over the app's parts. It waits for the start-up job (`app.startup`, loading the
    first model) before showing which model is active."""
    models, queue, service, settings, ready = app.models, app.queue, app.service, app.settings, app.startup

    def gallery_owner(request: gr.Request | None) -> str | None:
        """With log-ins on, a visitor's Gallery shows their own folder, unless the setting shares
        everyone's; visitors without a log-in (the API alone has one) see every image."""
        name = getattr(request, "username", None)
        if not app.logins or settings["gallery_show_all_users"] or not name:
            return None
        return user_folder(name)

    extensions = getattr(app, "extensions", None)
    extension_tabs = extensions.callbacks.ui_tabs() if extensions is not None else []  # their Blocks, made outside the page
    with gr.Blocks(title="Stable Diffusion") as page:
        with gr.Row(elem_id="quicksettings"):
            checkpoint = gr.Dropdown(
                models.titles(), value=models.active.info.title if models.active else None, label="Stable Diffusion checkpoint",
                elem_id="setting_sd_model_checkpoint", scale=4, allow_custom_value=False,
            )
            refresh = gr.Button("🔄", elem_id="refresh_sd_model_checkpoint", size="sm", scale=0, min_width=40)
            vae = gr.Dropdown(vae_choices(service), value=service.sd_vae, label="SD VAE", elem_id="setting_sd_vae", scale=2,
                              info="Automatic: <checkpoint>.vae.safetensors if there is one. None: the checkpoint's own.")
            vae_refresh = gr.Button("🔄", elem_id="refresh_sd_vae", size="sm", scale=0, min_width=40)
        notice = gr.Markdown(elem_id="model_notice", visible=False)
        quick = Quicksettings(checkpoint, vae, getattr(app, "network_cards", None))

        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img"):
                controls = build_txt2img_tab(queue, service, settings.preview_every, controlnet=app.controlnet, scripts=app.scripts,
                                             extensions=extensions, quick=quick)
            with gr.Tab("img2img", id="img2img"):
                img2img = build_img2img_tab(queue, service, settings.preview_every, access=app.access, interrogate=app.interrogate,
                                            controlnet=app.controlnet, scripts=app.scripts, extensions=extensions, quick=quick)
            with gr.Tab("Extras", id="extras"):
                extras = build_extras_tab(queue, app.extras, access=app.access, max_pixels=lambda: service.limits.max_pixels)
            send = SendTargets(tabs, controls.paste, img2img, extras.image)
            with gr.Tab("PNG Info", id="pnginfo"):
                build_pnginfo_tab(send)
            with gr.Tab("Gallery", id="gallery") as gallery_tab:
                gallery = build_gallery_tab(app.gallery, lambda: settings["gallery_per_page"], send, gallery_tab, gallery_owner)
            actions = OutputActions(settings, app.paths.data_dir, SaveFolders(), send, gallery, logins=bool(getattr(app, "logins", False)),
                                    served=(app.paths.outputs_dir,))
            for panel in (controls.output, img2img.output, extras.output):  # 📂, Save, Copy infotext, Send to ... under each output
                wire_output_buttons(panel, actions)
            if app.downloads is not None:
                with gr.Tab("Models", id="models"):
                    build_models_tab(app.downloads, app.access, checkpoint, models.titles)
            build_train_tab(app)  # A1111's Train tab: LoRA, Create embedding, Train (embedding)
            render_extension_tabs(extensions, extension_tabs)
            with gr.Tab("Settings", id="settings") as settings_tab:
                build_settings_tab(settings, models, queue, service, lambda: vae_choices(service), app.warnings, settings_tab,
                                   localizations=getattr(app, "localizations", None))
            if getattr(app, "extension_dirs", None) is not None:
                with gr.Tab("Extensions", id="extensions") as extensions_tab:
                    build_app_extensions_tab(app, extensions_tab)

        footer = gr.Markdown(_footer(), elem_id="footer_info")

        def current_title() -> str | None:
            return models.current.title if models.current else None

        # Per-model defaults (the demo model's 64x64) apply to both tabs' controls.
        fields = [*controls.by_field.items(), *img2img.by_field.items()]
        hinted = [controls.guide_box, controls.guide, controls.examples, *(control for _name, control in fields)]

        async def switch(title: str, request: gr.Request):
            """Select the checkpoint at once (jobs submitted from now on run on it), then load
            it in this user's turn; if it will not load, say why and go back."""
            if not title or title == current_title():
                return [gr.update(), gr.update()] + [gr.update()] * len(hinted)
            before = _hints(models)
            try:
                job = await switch_checkpoint(models, queue, title, page_user(request), settings)
            except (ValueError, QueueStopped) as exc:
                gr.Warning(str(exc), duration=20)
                return [gr.update(choices=models.titles(), value=current_title()), _notice(models)] + [gr.update()] * len(hinted)
            if job.status is not JobStatus.DONE:  # say why, and show the model still in use
                gr.Warning(job.error or f"Could not load {title}", duration=20)
            after = _hints(models)
            hints = _hint_updates(fields, after, before, translate(request)) if after != before else [gr.update()] * len(hinted)
            return [gr.update(choices=models.titles(), value=current_title()), _notice(models), *hints]

        def do_refresh():
            models.refresh()
            return gr.update(choices=models.titles(), value=current_title())

        checkpoint.change(switch, checkpoint, [checkpoint, notice, *hinted], concurrency_limit=None, api_name=False)

        def select_vae(choice: str):
            """Jobs submitted from now on decode with this VAE (A1111's sd_vae, saved to config.json)."""
            try:
                settings.update({"sd_vae": choice})
            except ValueError as exc:
                gr.Warning(str(exc), duration=20)
            return gr.update(choices=vae_choices(service), value=service.sd_vae)

        vae.change(select_vae, vae, vae, concurrency_limit=None, api_name=False)
        vae_refresh.click(lambda: gr.update(choices=vae_choices(service), value=service.sd_vae), None, vae, queue=False, api_name=False)
        refresh.click(do_refresh, None, checkpoint, queue=False, api_name=False)
        def translate(request: gr.Request | None):
            """Long Markdown in the page's language (the setting, or the address's ?localization=)."""
            return lambda text: localized_markdown(text, settings, getattr(app, "localizations", None), request)

        def on_load(request: gr.Request):
            if ready is not None:
                ready.wait(300)
            return [gr.update(choices=models.titles(), value=current_title()), _notice(models),
                    _footer(models.devices.describe()), gr.update(choices=vae_choices(service), value=service.sd_vae),
                    *_hint_updates(fields, _hints(models), None, translate(request))]

        page.load(on_load, None, [checkpoint, notice, footer, vae, *hinted], api_name=False)
    return page
