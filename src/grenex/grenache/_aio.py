"""The aiohttp boundary: one HTTP POST helper, with every aiohttp error translated.

Both the Grape link and the HTTP RPC client send small POSTs over keep-alive connections; this
module owns the ``ClientSession`` for them and turns aiohttp/OS errors into the library's
exception tree (see :mod:`grenex.grenache.errors`), so no other module catches aiohttp errors.

Keep-alive detail: Node's HTTP server closes an idle connection after 5 s. A client that keeps
idle connections longer races the server's close and sends a request into a dying socket, so
idle connections are dropped after :data:`KEEPALIVE_IDLE_S` (shorter than Node's 5 s).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Final

import aiohttp

from grenex.grenache.errors import RequestTimeoutError, TransportError

KEEPALIVE_IDLE_S: Final = 4.0


class HttpPoster:
    """POST bytes, get ``(status, body)`` back; bounded time, bounded reply size.

    The session is created lazily on first use so that the object can be built outside a
    running event loop.
    """

    def __init__(
        self,
        *,
        connections_max: int = 256,
        ssl_context: ssl.SSLContext | None = None,
        reply_bytes_max: int = 16 * 1024 * 1024,
    ) -> None:
        self._connections_max = connections_max
        self._ssl = ssl_context
        self.reply_bytes_max = reply_bytes_max
        self._session: aiohttp.ClientSession | None = None

    @property
    def scheme(self) -> str:
        return "https" if self._ssl is not None else "http"

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._connections_max,
                keepalive_timeout=KEEPALIVE_IDLE_S,
                ssl=self._ssl if self._ssl is not None else False,
                use_dns_cache=True,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                # Nothing beyond what Grenache needs: less to write and to parse per request.
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None),
            )
            self._session = session
        return session

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        peer: str = "",
    ) -> tuple[int, bytes]:
        """POST ``body`` to ``url``; return the status and the whole reply body.

        Raises :class:`TransportError` (``delivered=False`` when the connection could not even
        be made) or :class:`RequestTimeoutError`.
        """
        session = self._get_session()
        try:
            async with asyncio.timeout(timeout_s):
                async with session.post(url, data=body, headers=headers) as resp:
                    length = resp.content_length
                    if length is not None and length > self.reply_bytes_max:
                        raise TransportError(
                            f"ERR_REPLY_TOO_LARGE: {length} bytes",
                            code="ERR_REPLY_TOO_LARGE",
                            peer=peer,
                        )
                    if length is not None:
                        data = await resp.read()
                    else:
                        data = await self._read_bounded(resp, peer)
                    return resp.status, data
        except TimeoutError:
            raise RequestTimeoutError(
                f"ERR_TIMEOUT: no reply from {url} in {timeout_s:g}s", peer=peer
            ) from None
        except aiohttp.ClientConnectorError as exc:
            # The TCP (or TLS) connection was never made: the request was not delivered.
            raise TransportError(
                f"ERR_REQUEST_GENERIC: request to {url} failed, reason: {exc.os_error or exc}",
                peer=peer,
                delivered=False,
            ) from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise TransportError(
                f"ERR_REQUEST_GENERIC: request to {url} failed, reason: "
                f"{type(exc).__name__}: {exc}",
                peer=peer,
            ) from None

    async def _read_bounded(self, resp: aiohttp.ClientResponse, peer: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await resp.content.readany()
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.reply_bytes_max:
                raise TransportError(
                    f"ERR_REPLY_TOO_LARGE: more than {self.reply_bytes_max} bytes",
                    code="ERR_REPLY_TOO_LARGE",
                    peer=peer,
                )
            chunks.append(chunk)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
