"""The delivery, step by step (docs/DESIGN.md section 3): check the message, sign it,
find the route, take the MX-group slot, then the connection loop. Each step is a module
of this package; this one strings them together and keeps no state, so qremoted runs
many of these at once.
"""

from __future__ import annotations

from qremote import report
from qremote.control import ControlError
from qremote.delivery import shape
from qremote.delivery.connections import Connections
from qremote.delivery.context import Caller, Delivery, Probe
from qremote.delivery.outcome import Notes, Outcome
from qremote.delivery.resources import Resources
from qremote.delivery.route import find as find_route
from qremote.delivery.signature import Signature, sign
from qremote.delivery.slot import claim
from qremote.groups import caps
from qremote.groups import rules as group_rules
from qremote.metrics.trace import Trace
from qremote.routing import source
from qremote.settings import HeaderMode, Settings
from qremote.shaping import config as shaping
from qremote.smtp.body import Body, header_block, is_eight_bit
from qremote.smtp.conversation import Envelope
from qremote.smtp.session import BeforeDot


async def deliver(
    settings: Settings,
    host: str,
    sender: bytes,
    recipients: list[bytes],
    message: bytes,
    resources: Resources | None = None,
    before_dot: BeforeDot | None = None,
    trace: Trace | None = None,
) -> Outcome:
    """Sign and deliver one message to one destination host.

    ``resources``: qremoted's, kept between deliveries; None makes (and ends) a
    standalone delivery's own. ``before_dot`` is awaited just before each final dot
    (qremoted's commit with its client); the :class:`~qremote.smtp.session.Abandoned`
    it may raise ends the delivery and is raised from here: nothing was sent, no report
    is owed to anyone. ``trace`` is filled with what the delivery did (qremoted's record
    and counts); without one, nothing is kept.

    Never raises for remote trouble. What was signed is said in every report that comes
    from a remote host, so the qmail-send log shows it next to the delivery.
    """
    trace = trace if trace is not None else Trace()
    signed = sign(settings, sender, recipients, message, trace)
    if isinstance(signed, Outcome):
        return signed
    own = resources or Resources.standalone(settings)
    try:
        return await _send(settings, own, host, signed, Caller(before_dot), trace)
    finally:
        if resources is None:
            await own.close()


async def probe(settings: Settings, host: str, sender: bytes, watcher: Probe) -> Outcome:
    """Go where a delivery from ``sender`` to ``host`` would go, as far as the envelope
    (TLS, AUTH), and stop without sending anything: ``qremote check --route``.
    ``watcher`` is told each step as it is reached, with the delivery's own time-outs."""
    origin = source.source_for(sender, settings.bindings, settings.outgoing_ip, settings.helo)
    try:
        source.check_local(origin)
    except ControlError as e:
        return Outcome.final(report.control_error(str(e)))
    nothing = Signature(sender, [], origin, (b"",), Notes())
    resources = Resources.standalone(settings)
    try:
        return await _send(settings, resources, host, nothing, Caller(probe=watcher), Trace())
    finally:
        await resources.close()


async def _send(
    settings: Settings,
    resources: Resources,
    host: str,
    signed: Signature,
    caller: Caller,
    trace: Trace,
) -> Outcome:
    """Route and transmit an already signed message."""
    found = await find_route(settings, resources, host, signed)
    if isinstance(found, Outcome):
        return found
    names = [t.name for t in found.targets]
    mx_group = group_rules.group_for(found.grouped_by, names, settings.groups)
    path = shaping.path_for(settings.shaping.shaping, found.grouped_by, names, mx_group.name)
    named = not mx_group.name.startswith(group_rules.UNNAMED)
    group = shaping.group(path, mx_group, named, settings.groups.default_limit)
    trace.group = group.name
    notes = signed.notes.copy()
    if settings.shaping.error is not None:
        notes.add(report.note_shaping_unread(settings.shaping.error))
    shaped = await shape.admit_route(settings, resources, found, path, notes, trace)
    if isinstance(shaped, Outcome):
        return shaped
    found, origin = shaped
    place = await claim(settings, resources, found, group, notes, trace)
    if isinstance(place, Outcome):
        return place
    tcpto = place.tcpto(settings, resources)
    body = Body(*signed.parts)
    envelope = _envelope(settings, signed, body)
    delivery = Delivery(
        settings, found, envelope, body, group.name, notes, tcpto, resources, caller, trace,
        shape.Shaped(path, origin),
    )  # fmt: skip
    async with caps.Hold(place.slot) as hold:
        outcome = await Connections(delivery, hold, place.kept).run()
    await shape.observe(settings, resources, path, origin, outcome)
    if tcpto.notes:
        outcome.message = Notes(tcpto.notes).after(outcome.message)
    return outcome


def _envelope(settings: Settings, signed: Signature, body: Body) -> Envelope:
    parts = signed.parts
    return Envelope(
        helo=signed.origin.helo,
        sender=signed.sender,
        recipients=signed.recipients,
        size=body.size,
        eight_bit=any(is_eight_bit(p) for p in parts),
        utf8_headers=not header_block(parts[-1]).isascii() or not parts[0].isascii(),
        strict_headers=settings.utf8_headers is HeaderMode.BOUNCE,
    )
