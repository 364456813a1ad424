"""The files an operator deploys dispynode with, shipped inside the package.

* ``Dockerfile``: an image whose default command is ``dispynode --daemon --serve 1``,
  for a fresh container per client (dispynode's documentation, "Docker Container");
* ``dispynode.service``: a hardened systemd unit.

They are package data, so a user finds them from the installed package, with no source
tree: ``python -m dispy_node.deploy`` lists them, ``python -m dispy_node.deploy NAME``
prints one, ``python -m dispy_node.deploy --copy DIR`` copies them (:mod:`.__main__`).
From Python, :func:`text` returns a file's text and :data:`FILES` names them.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["FILES", "text"]

#: The shipped files and what each is for (the order in which they are listed).
FILES: dict[str, str] = {
    "Dockerfile": "a container image running dispynode --daemon --serve 1 (docker build -t dispynode .)",
    "dispynode.service": "a systemd unit running dispynode as a service (/etc/systemd/system/)",
}


def text(name: str) -> str:
    """The text of the shipped file ``name`` (one of :data:`FILES`).

    Raises KeyError, naming the files there are, for any other name.
    """
    if name not in FILES:
        raise KeyError(f"no deployment file {name!r}: there are {', '.join(FILES)}")
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
