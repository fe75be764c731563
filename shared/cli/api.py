"""The client commands' way to the coordinator: an admin client, and one API call whose failures
become one clear line and a non-zero exit."""

from __future__ import annotations

from shared.cli.output import fail
from shared.client import ApiError, Client, default_admin_token, default_url


def admin_client() -> Client:
    token = default_admin_token()
    if not token:
        fail("no admin token: set JUPITER_TOKEN (on the leader it is read from $JUPITER_HOME/admin.token)")
    return call(lambda: Client(default_url(), token))  # trusting an https coordinator may fetch its CA


def call(fn):
    """Run one API call and turn its failures into one clear line and a non-zero exit."""
    import httpx

    from shared.client import TrustError
    from shared.tlspin import PinMismatch

    try:
        return fn()
    except ApiError as exc:
        fail(str(exc))
    except (TrustError, PinMismatch) as exc:
        fail(str(exc))
    except httpx.TransportError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
            fail(f"cannot verify the certificate of {default_url()}: set JUPITER_CA_SHA256 to the CA pin (the "
                 f"coordinator logs it at start; it is the second field of a join string) or JUPITER_CA_FILE "
                 f"to its ca.pem ({exc})")
        fail(f"cannot reach the coordinator at {default_url()} ({type(exc).__name__}); is it running?")
    except OSError as exc:  # fetching its CA for JUPITER_CA_SHA256 (shared.tlspin, standard library)
        fail(f"cannot reach the coordinator at {default_url()} ({type(exc).__name__}: {exc}); is it running?")
