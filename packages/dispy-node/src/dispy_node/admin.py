"""dispyadmin's requests to the node (``dispynode --admin_secret``).

dispyadmin connects to the node's port like a client, but its Hello names
:data:`~dispy_core.messages.ADMIN_KEY_ID`, so the handshake runs with the node's *admin
secret* instead of the cluster secret (HMAC challenge-response with fresh nonces on both
sides, then a MAC on every frame: a recorded request can't be replayed, and nothing is
read before the peer proved that it knows the secret). A node without an admin secret
refuses the handshake with a Denied that says so; with another secret the proofs don't
verify. Either way the refusal goes to the node's rate-limited refusal log.

On an admin connection the node serves only :data:`REQUESTS`: its state, and changes of
CPUs, service window and serve count, each carried out through the node's own methods
(the ones its console and options use), answered with the node's state after the change
or an AdminRefused saying why nothing changed. Anything else closes the connection: an
admin connection can't set up a computation or submit a job, so it can't run code.
"""

from __future__ import annotations

import logging
import platform
from typing import TYPE_CHECKING, Any

from dispy_core.errors import AuthenticationError, ConfigError
from dispy_core.messages import (
    AdminInfoRequest,
    AdminNodeInfo,
    AdminRefused,
    AdminSetCpus,
    AdminSetServe,
    AdminSetServiceTimes,
    Message,
    Pong,
    Welcome,
)

from .options import machine_cpus
from .sysinfo import SOFTWARE, avail_info

if TYPE_CHECKING:
    from dispy_core.aio import Channel

    from .server import Node

__all__ = ["REQUESTS", "admin_key", "on_message", "node_state", "refusal_on_cluster_connection"]

log = logging.getLogger(__name__)

#: The requests an admin connection may send.
REQUESTS: frozenset[type[Message]] = frozenset({AdminInfoRequest, AdminSetCpus, AdminSetServiceTimes, AdminSetServe})


def admin_key(node: Node) -> tuple[str, bool]:
    """The key of an admin handshake (frames always carry MACs), or AuthenticationError
    with the reason the peer is told (Denied) when the node takes no admin requests."""
    if not node.admin_secret:
        raise AuthenticationError(f"node {node.cfg.name} takes no admin requests: it was started "
                                  "without --admin_secret")
    return node.admin_secret, True


def refusal_on_cluster_connection(node: Node) -> AdminRefused:
    """The answer to an admin request on a cluster (client) connection."""
    return AdminRefused(f"node {node.cfg.name}: admin requests need a connection authenticated "
                        "with the node's admin secret (dispyadmin --secret), not the cluster secret")


def node_state(node: Node, ip_addr: str, port: int) -> AdminNodeInfo:
    """What dispyadmin shows of ``node``; ``ip_addr``/``port``: where it was reached."""
    cfg = node.cfg
    clients: list[str] = []
    for comp in node.comps.values():
        peer: Any = comp.client.peer if comp.client is not None else None
        text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""
        if text and text not in clients:
            clients.append(text)
    return AdminNodeInfo(
        name=cfg.name,
        ip_addr=cfg.announced_addr(ip_addr),
        port=port,
        cpus=cfg.cpus,
        max_cpus=machine_cpus(),
        software=SOFTWARE,
        platform=platform.platform(),
        service_start=cfg.service_start,
        service_stop=cfg.service_stop,
        service_end=cfg.service_end,
        serve=cfg.serve,
        clients_done=node.served,
        busy=node.sched.busy,
        jobs_done=node.jobs_done,
        cpu_time=round(node.cpu_time, 3),
        clients=clients,
        state=node.state_text(),
        avail_info=avail_info(cfg.dest_path_prefix),
    )


def on_message(node: Node, ch: Channel, msg: Message) -> None:
    """A message on an admin connection (authenticated with the admin secret)."""
    t = type(msg)
    if t is Welcome or t is Pong:
        return
    if t not in REQUESTS:
        node.refusals.refused("not an admin request", "closed admin connection from %s: it sent %s, "
                              "which is not an admin request", ch.peer, t.__name__)
        ch.send(AdminRefused(f"{t.__name__} is not an admin request; an admin connection may only "
                             "ask for the node's state and change its CPUs, service times and serve count"))
        ch.close()
        return
    try:
        if t is AdminSetCpus:
            node.set_cpus(msg.cpus)  # type: ignore[attr-defined]
            log.info("dispyadmin %s set the node's CPUs to %d", ch.peer, node.cfg.cpus)
        elif t is AdminSetServiceTimes:
            node.set_service_times(msg.start, msg.stop, msg.end)  # type: ignore[attr-defined]
            log.info("dispyadmin %s set the service times: %s", ch.peer,
                     node.service.window.describe() if node.service is not None else "none")
        elif t is AdminSetServe:
            node.set_serve(msg.serve)  # type: ignore[attr-defined]
            log.info("dispyadmin %s set the serve count to %d", ch.peer, node.cfg.serve)
    except ConfigError as exc:
        log.info("dispyadmin %s: %s refused: %s", ch.peer, t.__name__, exc)
        ch.send(AdminRefused(str(exc)))
        return
    user = ch.user
    ch.send(node_state(node, getattr(user, "ip_addr", ""), getattr(user, "port", 0)))
