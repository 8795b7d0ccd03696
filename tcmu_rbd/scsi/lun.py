"""The mutable description of one LUN that parse() answers for."""

from dataclasses import dataclass, field

# ALUA asymmetric access states (SPC-4 6.37)
ALUA_ACTIVE_OPTIMIZED = 0x0
ALUA_ACTIVE_NON_OPTIMIZED = 0x1
ALUA_STANDBY = 0x2
ALUA_UNAVAILABLE = 0x3
ALUA_LBA_DEPENDENT = 0x4
ALUA_OFFLINE = 0xE
ALUA_TRANSITIONING = 0xF

# supported-state bits of an RTPG descriptor (byte 1)
ALUA_SUP_T = 0x80
ALUA_SUP_O = 0x40
ALUA_SUP_LBD = 0x10
ALUA_SUP_U = 0x08
ALUA_SUP_S = 0x04
ALUA_SUP_AN = 0x02
ALUA_SUP_AO = 0x01
# what LIO gives a new target port group
ALUA_SUP_LIO_DEFAULT = 0xCF

# INQUIRY TPGS field (byte 5 bits 5-4)
TPGS_NONE = 0x00
TPGS_IMPLICIT = 0x10
TPGS_EXPLICIT = 0x20

PROTO_ISCSI = 5

# RTPG status codes
ALUA_STATUS_NONE = 0x00
ALUA_STATUS_EXPLICIT_STPG = 0x01
ALUA_STATUS_IMPLICIT = 0x02

DEFAULT_OBJECT_SIZE = 4 * 1024 * 1024   # rbd's default object size
MIN_MAX_UNMAP_BYTES = 16 * 1024 * 1024


@dataclass(slots=True)
class Port:
    """One target port (LIO TPG) that is a member of a target port group."""
    rel_port_id: int = 1
    wwn: str = ""              # target name, e.g. iqn.2003-01.org.linux-iscsi.gw1:...
    tpgt: int = 1
    proto_id: int = PROTO_ISCSI
    enabled: bool = True       # the TPG is enabled on this host: the port we answer for


@dataclass(slots=True)
class PortGroup:
    """A target port group as configfs core/.../alua/<name> describes it."""
    id: int = 0
    name: str = "default_tg_pt_gp"
    state: int = ALUA_ACTIVE_OPTIMIZED
    supported: int = ALUA_SUP_LIO_DEFAULT
    preferred: bool = False
    status: int = ALUA_STATUS_NONE
    implicit_trans_secs: int = 0
    tpgs: int = TPGS_IMPLICIT  # TPGS_EXPLICIT enables STPG
    ports: list = field(default_factory=lambda: [Port()])


def _default_groups():
    return [PortGroup()]


@dataclass(slots=True)
class Lun:
    num_blocks: int
    block_size: int = 512
    serial: str = ""               # wwn/vpd_unit_serial
    vendor: str = "LIO-ORG"
    product: str = "TCMU device"
    revision: str = "0002"
    max_xfer_blocks: int = 1024    # hw_max_sectors
    write_cache: bool = False
    read_only: bool = False
    thin: bool = True
    unmap_granularity: int = 0     # blocks; 0 -> rbd object size (4 MiB) / block_size
    max_unmap_blocks: int = 0      # 0 -> max(4 * unmap_granularity, 16 MiB) (tcmu-runner's rbd: 4 objects)
    max_unmap_descriptors: int = 64
    max_write_same_blocks: int = 0  # 0 -> max_unmap_blocks
    solid_state: bool = True       # VPD B1 MEDIUM ROTATION RATE = 1 (non-rotating)
    config_string: str = ""        # dev_config, e.g. "rbd/pool/img;osd_op_timeout=30" (VPD 83 vendor-specific)
    # standard INQUIRY's transport version descriptor: pages.VD_ISCSI when every
    # port the LUN is exported on is iSCSI, 0 when not known (or mixed)
    transport_version_descriptor: int = 0
    port_groups: list = field(default_factory=_default_groups)
    ua_capacity_changed: bool = False
    # copy manager limits (RECEIVE COPY RESULTS operating parameters)
    max_copy_segments: int = 16
    max_copy_segment_bytes: int = 16 * 1024 * 1024
    # COPY STATUS: list identifier -> (copy manager status, segments processed,
    # bytes transferred) of the last copies, oldest first (xcopy.record_copy)
    copy_results: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.block_size <= 0 or self.block_size & (self.block_size - 1):
            raise ValueError("block_size must be a power of two")
        if self.num_blocks < 0:
            raise ValueError("num_blocks must be >= 0")
        if not self.unmap_granularity:
            self.unmap_granularity = max(1, DEFAULT_OBJECT_SIZE // self.block_size)
        if not self.max_unmap_blocks:
            # 4 objects as tcmu-runner's rbd handler (16 MiB with 4 MiB objects),
            # never less than 16 MiB when the granularity is small (file backends)
            self.max_unmap_blocks = max(4 * self.unmap_granularity,
                                        MIN_MAX_UNMAP_BYTES // self.block_size)
        if not self.max_write_same_blocks:
            self.max_write_same_blocks = self.max_unmap_blocks

    def resize(self, num_blocks):
        """New capacity; the next command (not INQUIRY/REQUEST SENSE/REPORT LUNS)
        gets UNIT ATTENTION / CAPACITY DATA HAS CHANGED, once."""
        if num_blocks < 0:
            raise ValueError("num_blocks must be >= 0")
        self.num_blocks = num_blocks
        self.ua_capacity_changed = True

    # -- ALUA helpers ---------------------------------------------------------------
    def local_port(self):
        """(group, port) of the first enabled port, or (None, None) without ALUA."""
        for g in self.port_groups:
            for p in g.ports:
                if p.enabled:
                    return g, p
        return None, None

    def naa_id(self):
        """The 16-byte NAA IEEE Registered Extended designator (type 6, OUI
        00-14-05) derived from the serial as LIO and tcmu-runner derive it: the
        hex digits of the serial fill the remaining 25 nibbles."""
        return naa_from_serial(self.serial)


_HEX = {c: int(c, 16) for c in "0123456789abcdefABCDEF"}


def naa_from_serial(serial):
    nibbles = [0x6, 0x0, 0x0, 0x1, 0x4, 0x0, 0x5]
    for ch in serial:
        v = _HEX.get(ch)
        if v is None:
            continue
        nibbles.append(v)
        if len(nibbles) == 32:
            break
    nibbles.extend([0] * (32 - len(nibbles)))
    return bytes((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, 32, 2))
