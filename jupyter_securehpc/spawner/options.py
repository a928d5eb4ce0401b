"""The spawn options a user may choose, allow-listed and validated against the project's policy.

Nothing a user typed reaches the batch script as text: every value is parsed here into an int or a
validated project name, and anything else (unknown keys, several values, text where a number belongs,
numbers beyond the policy) is refused with a message the user can act on.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from ..projects.policy import Policy
from ..vocabulary import InvalidName, validate_name

FIELDS = ("project", "gpus", "cpus", "memory_gb", "minutes")
_NUMBER = re.compile(r"[0-9]{1,6}")


class OptionsError(ValueError):
    """A spawn option that is not allowed; the message names it and the allowed range."""


@dataclass(frozen=True)
class SessionRequest:
    project: str
    gpus: int
    cpus: int
    memory_gb: int
    minutes: int


def _number(name: str, value: object, low: int, high: int) -> int:
    text = str(value)
    if not _NUMBER.fullmatch(text):
        raise OptionsError(f"{name} must be a whole number from {low} to {high}, not {text[:20]!r}")
    number = int(text)
    if not low <= number <= high:
        raise OptionsError(f"{name} must be from {low} to {high} under this project's policy; you asked for {number}")
    return number


def _single(data: dict, name: str) -> object:
    value = data.get(name)
    if isinstance(value, list):  # form data arrives as lists
        if len(value) != 1:
            raise OptionsError(f"give exactly one value for {name}")
        value = value[0]
    return value


DEFAULT_CPUS = 1


def default_request(project: str, policy: Policy, cpus: int | None = None) -> SessionRequest:
    """What a start without options asks for: modest, so that several sessions fit a node at once.

    One CPU (``DEFAULT_CPUS``, within the policy), the policy's memory share for those CPUs (``max_memory_gb``
    divided by ``max_cpus``, rounded up, at least 1 GB), one GPU where the policy allows any, and the policy's
    wall time (it does not keep other sessions off the node)."""
    cpus = min(DEFAULT_CPUS, policy.max_cpus) if cpus is None else cpus
    return SessionRequest(
        project=project,
        gpus=min(1, policy.max_gpus),
        cpus=cpus,
        memory_gb=memory_share(policy, cpus),
        minutes=policy.max_wall_time,
    )


def memory_share(policy: Policy, cpus: int) -> int:
    """The memory (GB) that ``cpus`` CPUs get of the policy's maximum: its share per CPU, rounded up."""
    share = -(-policy.max_memory_gb * cpus // policy.max_cpus)
    return max(1, min(policy.max_memory_gb, share))


def parse(data: dict, project_policy: dict[str, Policy], default_project: str | None = None) -> SessionRequest:
    """Validate raw options (from the form or the REST API) for a user whose projects are the keys of
    ``project_policy``. Missing resources take ``default_request``'s modest values (memory: the share of the
    CPUs asked for), never the policy's maximum."""
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise OptionsError(f"unknown spawn options {', '.join(map(repr, unknown))}: allowed are {', '.join(FIELDS)}")
    project = _single(data, "project") or default_project
    if not isinstance(project, str) or not project:
        raise OptionsError("choose a project")
    try:
        validate_name("project", project)
    except InvalidName as error:
        raise OptionsError(str(error)) from None
    if project not in project_policy:
        raise OptionsError(f"you are not a member of project {project!r}")
    policy = project_policy[project]

    def pick(name: str, low: int, high: int, default: int) -> int:
        value = _single(data, name)
        return default if value in (None, "") else _number(name, value, low, high)

    defaults = default_request(project, policy)
    cpus = pick("cpus", 1, policy.max_cpus, defaults.cpus)
    return SessionRequest(
        project=project,
        gpus=pick("gpus", 0, policy.max_gpus, defaults.gpus),
        cpus=cpus,
        memory_gb=pick("memory_gb", 1, policy.max_memory_gb, memory_share(policy, cpus)),
        minutes=pick("minutes", 1, policy.max_wall_time, defaults.minutes),
    )


def form(project_policy: dict[str, Policy], selected: str | None = None) -> str:
    """The options form: the user's projects and, per project, the resources its policy allows. The fields
    start at the defaults of the selected project (``default_request``): an empty field takes them too."""
    if not project_policy:
        return "<p>You are not a member of any project yet. Ask a data owner to add you.</p>"
    options = "".join(
        f'<option value="{html.escape(name)}"{" selected" if name == selected else ""}>{html.escape(name)} '
        f"(up to {p.max_gpus} GPU, {p.max_cpus} CPU, {p.max_memory_gb} GB, {p.max_wall_time} min)</option>"
        for name, p in sorted(project_policy.items())
    )
    top = max(project_policy.values(), key=lambda p: p.max_gpus)
    defaults = default_request(selected, project_policy[selected]) if selected in project_policy else None

    def value(name: str) -> str:
        return f' value="{getattr(defaults, name)}"' if defaults else ""

    return f"""
<label for="project">Project</label>
<select class="form-control" name="project" id="project" required>{options}</select>
<label for="gpus">GPUs</label>
<input class="form-control" type="number" name="gpus" id="gpus" min="0" max="{top.max_gpus}"
 value="{defaults.gpus if defaults else min(1, top.max_gpus)}">
<label for="cpus">CPUs</label>
<input class="form-control" type="number" name="cpus" id="cpus" min="1"{value("cpus")} placeholder="{DEFAULT_CPUS}">
<label for="memory_gb">Memory (GB)</label>
<input class="form-control" type="number" name="memory_gb" id="memory_gb" min="1"{value("memory_gb")}
 placeholder="the CPUs' share of the project's memory">
<label for="minutes">Wall time (minutes)</label>
<input class="form-control" type="number" name="minutes" id="minutes" min="1"{value("minutes")}
 placeholder="the project's maximum">
<p>Empty fields take modest defaults (one CPU and its share of the project's memory), so that your other
sessions fit beside this one. Limits are checked against the chosen project's policy when the server starts.</p>
"""
