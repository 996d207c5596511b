"""One garbling or evaluation at a time in a process.

The runtime's hash (fixed-key AES through OpenSSL) encrypts into buffers that live as long as
the process and are reused from call to call, so two threads must not hash at once.  The
client garbles and the server evaluates under :data:`RUNTIME`; the event loop keeps moving
bytes for every connection meanwhile.
"""
import threading

RUNTIME = threading.Lock()
