"""A hostile fake of Sas and TCSS: valid answers by default, and on demand the answers that broke
the exporter (issue 9): lone surrogates, endless, huge and bomb bodies, drips, slowness, new
error codes every time, giant numbers, deep nesting, nulls, truncated bodies, throttling,
endless listings, echoed credentials and connection resets.

It is a raw asyncio HTTP/1.1 server on loopback, so that it can misbehave below the level any
framework allows (lie about lengths, stop mid-body, drip). It does not check signatures. Switch
``mode`` at any time; ``only`` narrows a mode to some actions (the others stay healthy) and
``image`` to one image's per-image calls.
"""

from __future__ import annotations

import asyncio
import json
import random
import urllib.parse
import zlib
from collections.abc import Callable
from functools import cache
from typing import Any

MODES = (
    "healthy",
    "surrogate",  # lone surrogates in string fields (a truncated emoji)
    "endless",  # 200, chunked, never ends
    "huge",  # 200, Content-Length 200 MB, sent
    "gzip_bomb",  # ~1 MB of gzip that inflates to 256 MB
    "slow",  # the answer comes after ``delay`` seconds
    "drip",  # the body comes at 1 byte/s
    "new_code",  # an error with a code never seen before, every time
    "bignum",  # 10**400 as a count
    "deep",  # 100k-level nested JSON
    "null_field",  # null in string and number fields of rows
    "truncated",  # valid JSON cut in half
    "throttle_half",  # every other call throttled
    "endless_list",  # every page full, a total that never comes
    "echo",  # an error whose message echoes the request's credentials
    "reset",  # the connection dropped mid-body
)

BIG = "1" + "0" * 400


@cache
def gzip_bomb() -> bytes:
    """~1.1 MB of gzip inflating to 256 MB of zeros (built once, without holding the zeros)."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join(packer.compress(zeros) for _ in range(256)) + packer.flush()


class HostileCloud:
    """Answers Sas (``x-acs-action``) and TCSS (``X-TC-Action``) requests; see the module doc."""

    def __init__(self, images: int = 4, delay: float = 30.0) -> None:
        self.images = images
        self.delay = delay
        self.mode = "healthy"
        self.only: set[str] | None = None
        self.image: str | None = None
        self.requests = 0
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._calls = 0
        self._rng = random.Random(9)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> str:
        # Built before serving, off the loop: compressing 256 MB takes ~1 s, which inside an
        # answer stalled the shared event loop past the healthy accounts' 1 s deadlines.
        await asyncio.to_thread(gzip_bomb)
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def set(self, mode: str, only: set[str] | None = None, image: str | None = None) -> None:
        assert mode in MODES, mode
        self.mode, self.only, self.image = mode, only, image

    # -- HTTP -----------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                target = lines[0].split(" ")[1]
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if not await self._answer(writer, target, headers, body):
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    @staticmethod
    def _head(status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _send(
        self, writer: asyncio.StreamWriter, body: bytes, status: int = 200, **headers: str
    ) -> bool:
        all_headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        all_headers.update({k.replace("_", "-"): v for k, v in headers.items()})
        writer.write(self._head(status, all_headers) + body)
        await writer.drain()
        return True

    async def _answer(
        self, writer: asyncio.StreamWriter, target: str, headers: dict[str, str], body: bytes
    ) -> bool:
        self.requests += 1
        if "x-acs-action" in headers:
            cloud, action = "aliyun", headers["x-acs-action"]
            query = urllib.parse.urlsplit(target).query
            params: dict[str, Any] = dict(urllib.parse.parse_qsl(query))
        else:
            cloud, action = "tencent", headers.get("x-tc-action", "")
            params = json.loads(body or b"{}")
        self.seen.append((action, params))
        mode = self.mode
        if self.only is not None and action not in self.only:
            mode = "healthy"
        ident = params.get("ImageUuid") or params.get("ImageID")
        if self.image is not None and ident != self.image:
            mode = "healthy"
        answer = healthy(cloud, action, params, self.images)
        return await self._misbehave(writer, mode, cloud, action, answer, headers)

    async def _misbehave(
        self,
        writer: asyncio.StreamWriter,
        mode: str,
        cloud: str,
        action: str,
        answer: dict[str, Any],
        headers: dict[str, str],
    ) -> bool:
        if mode == "healthy":
            return await self._send(writer, json.dumps(answer).encode())
        if mode == "surrogate":  # a truncated emoji: the high half of U+1F600, alone
            bad = rewrite(answer, lambda k, v: v + "\ud83d" if k in TEXT_FIELDS else v)
            return await self._send(writer, json.dumps(bad).encode())  # sent as "\ud83d"
        if mode == "null_field":
            nulled = rewrite(answer, lambda k, v: None if isinstance(v, str) or _is_int(v) else v)
            return await self._send(writer, json.dumps(nulled).encode())
        if mode == "bignum":
            text = json.dumps(rewrite(answer, lambda k, v: -424242 if _is_int(v) else v))
            return await self._send(writer, text.replace("-424242", BIG).encode())
        if mode == "deep":
            return await self._send(writer, b"[" * 100_000 + b"]" * 100_000)
        if mode == "truncated":
            data = json.dumps(answer).encode()
            return await self._send(writer, data[: len(data) // 2])
        if mode == "gzip_bomb":
            return await self._send(writer, gzip_bomb(), Content_Encoding="gzip")
        if mode in ("endless", "huge"):
            if mode == "endless":
                head = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
            else:
                head = {"Content-Type": "application/json", "Content-Length": str(200 << 20)}
            writer.write(self._head(200, head))
            chunk = b"[" * 65536
            framed = b"%x\r\n%s\r\n" % (len(chunk), chunk) if mode == "endless" else chunk
            for _ in range(200 << 4):  # 200 MB at most, then drop the connection
                writer.write(framed)
                await writer.drain()
            return False
        if mode == "slow":
            await asyncio.sleep(self.delay)
            return await self._send(writer, json.dumps(answer).encode())
        if mode == "drip":
            data = json.dumps(answer).encode()
            writer.write(self._head(200, {"Content-Length": str(len(data))}))
            for byte in data:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(1.0)
            return True
        if mode == "reset":
            data = json.dumps(answer).encode()
            writer.write(self._head(200, {"Content-Length": str(len(data))}) + data[:10])
            await writer.drain()
            writer.transport.abort()
            return False
        if mode == "throttle_half":
            self._calls += 1
            if self._calls % 2:
                return await self._error(writer, cloud, *THROTTLE[cloud])
            return await self._send(writer, json.dumps(answer).encode())
        if mode == "new_code":
            self._calls += 1
            return await self._error(writer, cloud, f"Weird.Code{self._calls}", "new each time")
        if mode == "echo":
            echoed = "; ".join(f"{k}: {v}" for k, v in headers.items())
            return await self._error(
                writer, cloud, "InvalidParameter", f"cannot parse request {echoed}"
            )
        if mode == "endless_list":
            return await self._send(writer, json.dumps(endless_page(cloud, action)).encode())
        raise AssertionError(mode)

    async def _error(
        self, writer: asyncio.StreamWriter, cloud: str, code: str, message: str
    ) -> bool:
        if cloud == "aliyun":
            body = {"RequestId": "hostile", "Code": code, "Message": message}
            return await self._send(writer, json.dumps(body).encode(), status=400)
        envelope = {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": "h"}}
        return await self._send(writer, json.dumps(envelope).encode())


THROTTLE = {
    "aliyun": ("Throttling.User", "Request was denied due to user flow control."),
    "tencent": ("RequestLimitExceeded", "too fast"),
}


def rewrite(
    value: Any, leaf: Callable[[str, Any], Any], key: str = "", in_row: bool = False
) -> Any:
    """``value`` with ``leaf(key, scalar)`` applied to every scalar inside a row of a list
    (``ROW_LISTS``) or of a TCSS detail; identities and envelopes are left alone."""
    if isinstance(value, dict):
        return {
            k: v if k in IDENTITIES else rewrite(v, leaf, k, in_row or _rows(k, v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [rewrite(v, leaf, key, in_row) for v in value]
    return leaf(key, value) if in_row else value


IDENTITIES = {"Uuid", "ImageID", "ImageUuid", "BaselineNameKey", "RequestId"}
TEXT_FIELDS = {"OsName", "ImageName", "RepoName", "RepoNamespace", "Tag", "Digest", "ImageDigest"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


ROW_LISTS = {"ImageInstanceList", "BaselineResult", "List"}


def _rows(key: str, value: Any) -> bool:
    """Whether ``value`` holds rows: a list field, or a TCSS detail (its Response is one row)."""
    return key in ROW_LISTS or (
        key == "Response" and isinstance(value, dict) and "ImageID" in value
    )


def healthy(cloud: str, action: str, params: dict[str, Any], images: int) -> dict[str, Any]:
    """A valid answer of ``action`` for a fleet of ``images`` images."""
    if cloud == "aliyun":
        page = int(params.get("CurrentPage", 1))
        size = int(params.get("PageSize", 20))
        rows: list[dict[str, Any]] = []
        if action == "DescribeImageInstances":
            every = [
                {
                    "Uuid": f"h-{i}",
                    "RepoName": f"app{i}",
                    "RepoNamespace": "hostile",
                    "Tag": "1.0",
                    "Digest": f"sha256:{i:064x}",
                    "VulCount": i,
                    "ScaStatus": "SUCCESS",
                    "ImageSize": 1000 + i,
                }
                for i in range(images)
            ]
            rows = every[(page - 1) * size : page * size]
            return sas_page("ImageInstanceList", rows, images, page, size)
        if action == "DescribeImageBaselineCheckResult":
            rows = [
                {
                    "BaselineNameKey": "weak_password",
                    "HighRiskItemCount": 1,
                    "MiddleRiskItemCount": 2,
                    "LowRiskItemCount": 3,
                }
            ]
            return sas_page("BaselineResult", rows if page == 1 else [], 1, page, size)
        if action == "DescribeImageVulList":
            return {"RequestId": "h", "TotalCount": 2, "CurrentPage": 1, "VulRecords": []}
        key = {
            "ListImageRisk": "ImageRiskList",
            "DescribeAffectedMaliciousFileImages": "AffectedMaliciousFileImagesResponse",
        }[action]
        return sas_page(key, [], 0, page, size)
    if action == "DescribeAssetImageList":
        offset, limit = int(params.get("Offset", 0)), int(params.get("Limit", 10))
        every = [
            {
                "ImageID": f"sha256:{i:064x}",
                "ImageName": f"ccr.example.com/hostile/app{i}:1.0",
                "OsName": "debian",
                "VulCnt": i,
                "ScanStatus": "scanned",
                "ScanTime": "2024-10-25 16:13:39",
            }
            for i in range(images)
        ]
        listed = every[offset : offset + limit]
        return {"Response": {"List": listed, "TotalCount": images, "RequestId": "h"}}
    image_id = str(params.get("ImageID", ""))
    detail = {
        "ImageID": image_id,
        "ImageName": "ccr.example.com/hostile/app:1.0",
        "ImageDigest": "sha256:abc",
        "OsName": "debian",
        "VirusCnt": 1,
        "RiskCnt": 2,
        "ScanStatus": "scanned",
    }
    return {"Response": detail | {"RequestId": "h"}}


def sas_page(
    key: str, rows: list[dict[str, Any]], total: int, page: int, size: int
) -> dict[str, Any]:
    return {
        "RequestId": "h",
        "PageInfo": {
            "CurrentPage": page,
            "PageSize": size,
            "TotalCount": total,
            "Count": len(rows),
        },
        key: rows,
    }


def endless_page(cloud: str, action: str) -> dict[str, Any]:
    """A full page of fresh images and a total that is never reached."""
    endless_page.counter += 100  # type: ignore[attr-defined]
    base = endless_page.counter  # type: ignore[attr-defined]
    if cloud == "aliyun":
        rows = [{"Uuid": f"e-{base + i}"} for i in range(100)]
        return sas_page("ImageInstanceList", rows, 10**9, 1, 100)
    listed = [{"ImageID": f"e-{base + i}", "ImageName": f"r/e{base + i}"} for i in range(100)]
    return {"Response": {"List": listed, "TotalCount": 10**9, "RequestId": "h"}}


endless_page.counter = 0  # type: ignore[attr-defined]
