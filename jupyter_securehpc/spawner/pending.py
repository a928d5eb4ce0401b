"""Why a session's Slurm job is still waiting, in words a user understands (the spawn page's progress).

Slurm names the reason with a code (``squeue --format=%r``; see Slurm's "Job Reason Codes"): ``Resources``,
``Priority``, ``QOSMaxCpuPerUserLimit``, ``ReqNodeNotAvail, UnavailableNodes:n1``, ... Known codes and code
families become a sentence about the job's partition; an unknown code is shown as Slurm gave it, so that the
user can still quote it to the admins.
"""

from __future__ import annotations

import re

# Exact codes. "{partition}" is filled with the job's partition.
_EXACT = {
    "Resources": "all CPUs, memory or GPUs of the {partition} partition that this session asks for are in use by "
    "other jobs; it starts when they end (or ask for fewer CPUs, less memory or fewer GPUs)",
    "Priority": "jobs with a higher priority are queued before it in the {partition} partition",
    "Dependency": "it waits for another job to finish",
    "DependencyNeverSatisfied": "it depends on a job that failed, so it will never start: stop it and ask the admins",
    "BeginTime": "its start time has not come yet",
    "PartitionDown": "the {partition} partition is down: the admins must bring it up again",
    "PartitionInactive": "the {partition} partition is inactive: the admins must activate it",
    "PartitionNodeLimit": "it asks for more nodes than the {partition} partition allows",
    "PartitionTimeLimit": "its wall time is longer than the {partition} partition allows: ask for fewer minutes",
    "PartitionConfig": "it asks for something the {partition} partition does not offer",
    "ReqNodeNotAvail": "the nodes it needs in the {partition} partition are not available (down, drained or reserved)",
    "NodeDown": "a node it needs is down",
    "BadConstraints": "no node of the {partition} partition has what it asks for",
    "Reservation": "it waits for its advanced reservation to become usable",
    "JobHeldAdmin": "an admin holds it",
    "JobHeldUser": "it is held (released with scontrol release)",
    "Licenses": "the licences it needs are in use",
    "InvalidAccount": "its Slurm account is not valid: ask the admins",
    "InvalidQOS": "its quality of service is not valid: ask the admins",
    "AccountNotAllowed": "its account may not use the {partition} partition: ask the admins",
    "QOSNotAllowed": "its quality of service may not use the {partition} partition: ask the admins",
    "Cleaning": "Slurm is still cleaning up after an earlier job",
    "Prolog": "the node runs its start-up script",
    "None": "Slurm has not looked at it yet",
    "WaitingForScheduling": "Slurm has not looked at it yet",
    "SystemFailure": "Slurm itself failed: ask the admins",
}

# Families of codes, by prefix (Slurm has dozens: QOSMaxCpuPerUserLimit, AssocGrpGRES, ...).
_PREFIXES = (
    ("QOSGrp", "the quality of service's limit for a whole group of users is reached"),
    ("QOSMax", "it asks for more than the quality of service allows one job or one user"),
    ("QOS", "a quality-of-service limit holds it back"),
    ("AssocGrp", "the limit of its Slurm account (association) is reached"),
    ("AssocMax", "it asks for more than its Slurm account (association) allows"),
    ("Assoc", "a limit of its Slurm account (association) holds it back"),
    ("MaxCpu", "it asks for more CPUs than a limit of its account or quality of service allows"),
    ("MaxGRES", "it asks for more GPUs than a limit of its account or quality of service allows"),
    ("MaxMem", "it asks for more memory than a limit of its account or quality of service allows"),
)

_CODE = re.compile(r"[A-Za-z]+")


def describe(reason: str, partition: str) -> str:
    """``waiting: <why, in words>`` for a Slurm reason code, or ``waiting: Slurm says <code>`` for an unknown one."""
    text = " ".join(reason.split())[:200]
    code = _CODE.match(text)
    word = code.group(0) if code else ""
    if word in _EXACT:
        return "waiting: " + _EXACT[word].format(partition=partition)
    for prefix, words in _PREFIXES:
        if word.startswith(prefix):
            return f"waiting: {words} (Slurm: {text})"
    return f"waiting: Slurm says {text or 'nothing'}"
