"""cffi builder for tcmu_rbd._native (API mode).

The C sources in this directory are compiled into one extension; the cdef is
taken from their headers (everything between #include lines and #endif), so
each declaration is written once.
"""
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
# In dependency order (the cdef is their concatenation).  tcmu_abi.h is
# internal to native/ (macros, static inline) and stays out of the cdef.
HEADERS = ["iovec.h", "file_io.h", "metrics.h", "ring.h", "emulator.h", "scsi_fast.h", "engine.h", "engine_drive.h", "memory_dev.h", "rbd_aio.h", "cluster.h"]
SOURCES = ["iovec.c", "file_io.c", "metrics.c", "ring.c", "emulator.c", "scsi_fast.c", "engine.c", "engine_drive.c", "memory_dev.c", "rbd_aio.c", "cluster.c"]

# Kernel ABI constants, taken from the installed UAPI header at build time.
CONSTANTS = """
#define TCMU_MAILBOX_VERSION ...
#define TCMU_MAILBOX_FLAG_CAP_OOOC ...
#define TCMU_MAILBOX_FLAG_CAP_READ_LEN ...
#define TCMU_MAILBOX_FLAG_CAP_TMR ...
#define TCMU_MAILBOX_FLAG_CAP_KEEP_BUF ...
#define TCMU_UFLAG_UNKNOWN_OP ...
#define TCMU_UFLAG_READ_LEN ...
#define TCMU_UFLAG_KEEP_BUF ...
#define TCMU_OP_PAD ...
#define TCMU_OP_CMD ...
#define TCMU_OP_TMR ...
#define TCMU_SENSE_BUFFERSIZE ...
"""


def _cdef_of(path):
    text = open(path).read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = [l for l in text.splitlines() if not l.lstrip().startswith("#")]
    return "\n".join(lines)


ffibuilder = FFI()
ffibuilder.cdef("struct iovec { void *iov_base; size_t iov_len; };\n" + CONSTANTS)
for h in HEADERS:
    ffibuilder.cdef(_cdef_of(os.path.join(HERE, h)))

ffibuilder.set_source(
    "tcmu_rbd._native",
    "#include <sys/uio.h>\n#define __LINUX_UIO_H\n#include <linux/target_core_user.h>\n" + "".join('#include "%s"\n' % h for h in HEADERS),
    sources=[os.path.join("native", s) for s in SOURCES],
    include_dirs=[HERE],
    libraries=["rbd", "rados"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
