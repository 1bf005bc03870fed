"""The parameters of a job: the form fields of ``POST /api/v1/jobs``.

The sampling fields are derived from :class:`kinemate.pipeline.options.SamplingOptions`: one
optional field per option marked ``service``, with the option's bounds and help. A field the
client leaves out is not stored with the job, and the model's own default (its
``kinemate.json``, then the official default) applies — as in the CLI and the Python API, so
one job gives the same frames through all three. The operator's caps (``Limits.max_steps``,
``Limits.max_guidance``, the output side limits) apply on top of the options' own bounds.

The other fields (``control``, ``size``, ``fit``, ``watermark``, ``retarget``) say how the
inputs are framed and the result is marked; they are always stored. ``prompt`` and
``negative_prompt`` (models without a reference photo: text2video-zero) are stored when sent.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from kinemate.errors import UsageError
from kinemate.pipeline.options import (OPTION_FIELDS, format_size, option_bounds, option_help,
                                       parse_size)
from kinemate.service.config import CONTROL_KINDS, FIT_MODES, Limits, ServiceConfig

SAMPLING_FIELDS = tuple(name for name, f in OPTION_FIELDS.items() if f.metadata["service"])
TEXT_FIELDS = ("prompt", "negative_prompt")  # models without a reference photo
OTHER_FIELDS = ("control", "size", "fit", "watermark", "retarget", "priority", "model",
                *TEXT_FIELDS)
# stored with the job only when set (a job without them reads as before they existed; models
# with a reference photo take no prompt)
_STORED_WHEN_SET = {"priority": 0, "model": None, "prompt": None, "negative_prompt": None}
FIELDS = SAMPLING_FIELDS + OTHER_FIELDS
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


class _FramingFields(BaseModel):
    """The fields that are not sampling options (always stored with the job)."""

    model_config = ConfigDict(extra="forbid")
    control: Literal[CONTROL_KINDS] = Field("auto", description="densepose: the driving video "
                                            "is a DensePose render; pose: OpenPose maps from "
                                            "the video or pose JSON; auto: what the model takes")
    size: str | None = Field(None, description="output size WxH, multiples of 8 (default: "
                             "the model's)")
    fit: Literal[FIT_MODES] = Field("crop", description="how photo and video are fitted to "
                                    "the size, keeping their aspect")
    watermark: bool = Field(True, description="an invisible watermark in every frame")
    retarget: bool = Field(True, description="pose control: fit the motion to the person in "
                           "the photo (bone lengths, position)")
    prompt: str | None = Field(None, max_length=2000, description="models without a reference "
                               "photo (text2video-zero): the text the appearance comes from; "
                               "then send no 'reference' file")
    negative_prompt: str | None = Field(None, max_length=2000, description="text2video-zero: "
                                        "what to avoid (default: the preset's)")
    priority: int = Field(0, ge=0, le=9, description="scheduling priority, 0-9 (higher runs "
                          "first); at most the API key's max_priority")
    model: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                              description="a model the workers serve by name (GET "
                              "/api/v1/health lists them; default: the workers' default)")

    @field_validator("size")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        try:
            return format_size(parse_size(v))
        except UsageError as exc:
            raise ValueError(str(exc)) from None


def _sampling_field(name: str) -> tuple[Any, Any]:
    """``(type, Field)`` of one sampling option: optional, None = the model's default."""
    kind = type(OPTION_FIELDS[name].default)
    bounds = {k: v for k, v in option_bounds(name).items() if v is not None}
    extra = {"allow_inf_nan": False} if kind is float else {}
    return kind | None, Field(None, description=f"{option_help(name)}; default: the model's",
                              **bounds, **extra)


JobParams = create_model("JobParams", __base__=_FramingFields,
                         __doc__="Parameters of a job (form fields of POST /api/v1/jobs).",
                         **{name: _sampling_field(name) for name in SAMPLING_FIELDS})


def _caps(limits: Limits) -> dict[str, float]:
    """The operator's caps on sampling options (on top of the options' own bounds)."""
    return {"steps": limits.max_steps, "guidance": limits.max_guidance}


def sampling_bounds(limits: Limits, defaults: dict[str, Any] | None = None) -> dict[str, dict]:
    """What ``GET /api/v1/limits`` says of each sampling field: type, bounds with the
    operator's caps applied, help, and the loaded model's default (None before it loaded)."""
    caps = _caps(limits)
    out = {}
    for name in SAMPLING_FIELDS:
        bounds = option_bounds(name)
        if name in caps:
            bounds["le"] = caps[name] if bounds["le"] is None else min(bounds["le"], caps[name])
        out[name] = {"type": _JSON_TYPES[type(OPTION_FIELDS[name].default)], **bounds,
                     "default": (defaults or {}).get(name), "help": option_help(name)}
    return out


def form_properties() -> dict[str, dict]:
    """The OpenAPI properties of the job fields in a multipart form: a field left out takes
    its default, so optional fields are shown by their type (not as ``T | null``)."""
    props = {}
    for name, schema in JobParams.model_json_schema()["properties"].items():
        alternatives = [s for s in schema.get("anyOf", ()) if s.get("type") != "null"]
        flat = {k: v for k, v in schema.items() if k not in ("anyOf", "title")}
        if len(alternatives) == 1:
            flat.update(alternatives[0])
        if flat.get("default") is None:
            flat.pop("default", None)
        if name in _caps(Limits()):
            flat["description"] += "; the server may cap it lower, see GET /api/v1/limits"
        props[name] = flat
    return props


def parse_params(form_fields: dict[str, str], config: ServiceConfig) -> dict[str, Any]:
    """Check the form fields of a job; returns what is stored as ``job.params``: the sampling
    options the client set and every other field. Raises a 422 HTTPException."""
    values: dict[str, Any] = dict(form_fields)
    values.setdefault("watermark", config.watermark_default)
    try:
        params = JobParams.model_validate(values)
    except ValidationError as exc:
        raise HTTPException(422, validation_message(exc.errors())) from None
    lim = config.limits
    problems = [f"{name}: at most {cap:g} on this server" for name, cap in _caps(lim).items()
                if getattr(params, name) is not None and getattr(params, name) > cap]
    if params.size:
        w, h = parse_size(params.size)
        if not (lim.min_output_side <= w <= lim.max_output_side
                and lim.min_output_side <= h <= lim.max_output_side):
            problems.append(f"size: {params.size} is outside {lim.min_output_side}.."
                            f"{lim.max_output_side} pixels per side")
    if problems:
        raise HTTPException(422, "; ".join(problems) + " — change these parameters and resend")
    record = params.model_dump(include=set(OTHER_FIELDS))
    for name, unset in _STORED_WHEN_SET.items():
        if record.get(name) == unset:
            record.pop(name)
    record.update(sampling_options(params.model_dump(include=set(SAMPLING_FIELDS))))
    return record


def sampling_options(params: dict[str, Any]) -> dict[str, Any]:
    """The sampling options set in a job's params (the others take the model's default)."""
    return {name: params[name] for name in SAMPLING_FIELDS if params.get(name) is not None}


def validation_message(errors: list[dict]) -> str:
    """One line from pydantic's errors: each field with what is wrong with it."""
    parts = []
    for err in errors[:10]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
        msg = err.get("msg", "invalid")
        if err.get("type") == "value_error":
            msg = str(err.get("ctx", {}).get("error", msg))
        elif err.get("type") == "extra_forbidden":
            msg = f"unknown field (allowed: reference, driving, {', '.join(FIELDS)})"
        parts.append(msg if loc and msg.startswith(loc) else f"{loc or 'request'}: {msg}")
    return "; ".join(parts) + " — fix these fields and resend"
