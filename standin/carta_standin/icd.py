"""CARTA ICD 30 on the wire: the 8-byte event header and the protobuf messages the stand-in
(and tests speaking to any CARTA backend) need.

The message descriptors are built at runtime from the compact tables below (no protoc).
Field numbers and wire types match carta-protobuf as decoded by carta-frontend 6.0.0.

    from carta_standin import icd
    await ws.send(icd.encode_message(icd.EventType.REGISTER_VIEWER, 1,
                                     icd.messages.RegisterViewer(client_feature_flags=5)))
    event_type, icd_version, request_id, ack = icd.decode_message(await ws.recv())
    assert event_type == icd.EventType.REGISTER_VIEWER_ACK and ack.success
"""

import enum
import struct
from types import SimpleNamespace

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

ICD_VERSION = 30
HEADER = struct.Struct("<HHI")  # event_type, icd_version, request_id

_EVENTS = """
EMPTY_EVENT=0 REGISTER_VIEWER=1 FILE_LIST_REQUEST=2 FILE_INFO_REQUEST=3 OPEN_FILE=4
SET_IMAGE_CHANNELS=6 SET_CURSOR=7 SET_SPATIAL_REQUIREMENTS=8 SET_HISTOGRAM_REQUIREMENTS=9
SET_STATS_REQUIREMENTS=10 SET_REGION=11 REMOVE_REGION=12 CLOSE_FILE=13
SET_SPECTRAL_REQUIREMENTS=14 START_ANIMATION=15 START_ANIMATION_ACK=16 STOP_ANIMATION=17
REGISTER_VIEWER_ACK=18 FILE_LIST_RESPONSE=19 FILE_INFO_RESPONSE=20 OPEN_FILE_ACK=21
SET_REGION_ACK=22 REGION_HISTOGRAM_DATA=23 SPATIAL_PROFILE_DATA=25 SPECTRAL_PROFILE_DATA=26
REGION_STATS_DATA=27 ERROR_DATA=28 ANIMATION_FLOW_CONTROL=29 ADD_REQUIRED_TILES=30
REMOVE_REQUIRED_TILES=31 RASTER_TILE_DATA=32 REGION_LIST_REQUEST=33 REGION_LIST_RESPONSE=34
REGION_FILE_INFO_REQUEST=35 REGION_FILE_INFO_RESPONSE=36 IMPORT_REGION=37 IMPORT_REGION_ACK=38
EXPORT_REGION=39 EXPORT_REGION_ACK=40 SET_CONTOUR_PARAMETERS=45 CONTOUR_IMAGE_DATA=46
RESUME_SESSION=47 RESUME_SESSION_ACK=48 RASTER_TILE_SYNC=49 CATALOG_LIST_REQUEST=50
CATALOG_LIST_RESPONSE=51 CATALOG_FILE_INFO_REQUEST=52 CATALOG_FILE_INFO_RESPONSE=53
OPEN_CATALOG_FILE=54 OPEN_CATALOG_FILE_ACK=55 CLOSE_CATALOG_FILE=56 CATALOG_FILTER_REQUEST=57
CATALOG_FILTER_RESPONSE=58 SCRIPTING_REQUEST=59 SCRIPTING_RESPONSE=60 MOMENT_REQUEST=61
MOMENT_RESPONSE=62 MOMENT_PROGRESS=63 STOP_MOMENT_CALC=64 SAVE_FILE=65 SAVE_FILE_ACK=66
CONCAT_STOKES_FILES=69 CONCAT_STOKES_FILES_ACK=70 FILE_LIST_PROGRESS=71 STOP_FILE_LIST=72
PV_REQUEST=75 PV_RESPONSE=76 PV_PROGRESS=77 STOP_PV_CALC=78 FITTING_REQUEST=79
FITTING_RESPONSE=80 SET_VECTOR_OVERLAY_PARAMETERS=81 VECTOR_OVERLAY_TILE_DATA=82
FITTING_PROGRESS=83 STOP_FITTING=84 PV_PREVIEW_DATA=85 STOP_PV_PREVIEW=86 CLOSE_PV_PREVIEW=87
REMOTE_FILE_REQUEST=88 REMOTE_FILE_RESPONSE=89 CHANNEL_MAP_FLOW_CONTROL=90
"""
EventType = enum.IntEnum(
    "EventType",
    [(name, int(number)) for name, number in (pair.split("=") for pair in _EVENTS.split())],
)
EventType.__doc__ = "CARTA.EventType (ICD 30)."
EventType.__module__ = __name__

# Enums: name -> values in order from 0.
_ENUMS = {
    "SessionType": "NEW RESUMED",
    "FileType": "CASA CRTF DS9_REG FITS HDF5 MIRIAD UNKNOWN",
    "FileListFilterMode": "Content Extension AllFiles",
    "FileListType": "Image Catalog",
    "ErrorSeverity": "DEBUG INFO WARNING ERROR CRITICAL",
}

# Messages: name -> "field:number:type ..."; type is a scalar, an enum or message above/below,
# prefixed with `*` for repeated, or `map` for map<string, string>. Only the fields the
# stand-in uses are declared; others are kept as unknown fields by protobuf.
_MESSAGES = {
    "RegisterViewer": "session_id:1:fixed32 api_key:2:string client_feature_flags:3:fixed32",
    "RegisterViewerAck": "session_id:1:fixed32 success:2:bool message:3:string "
    "session_type:4:SessionType server_feature_flags:5:fixed32 "
    "user_preferences:6:map user_layouts:7:map platform_strings:8:map",
    "FileListRequest": "directory:1:string filter_mode:2:FileListFilterMode",
    "RegionListRequest": "directory:1:string filter_mode:2:FileListFilterMode",
    "FileInfo": "name:1:string type:2:FileType size:3:sfixed64 HDU_list:4:*string date:5:sfixed64",
    "DirectoryInfo": "name:1:string item_count:2:sfixed32 date:3:sfixed64",
    "FileListResponse": "success:1:bool message:2:string directory:3:string parent:4:string "
    "files:5:*FileInfo subdirectories:6:*DirectoryInfo cancel:7:bool",
    "RegionListResponse": "success:1:bool message:2:string directory:3:string parent:4:string "
    "files:5:*FileInfo subdirectories:6:*DirectoryInfo cancel:7:bool",
    "StopFileList": "file_list_type:1:FileListType",
    "FileInfoRequest": "directory:1:string file:2:string hdu:3:string support_aips_beam:4:bool",
    "FileInfoResponse": "success:1:bool message:2:string file_info:3:FileInfo",
    "OpenFile": "directory:1:string file:2:string hdu:3:string file_id:4:sfixed32",
    "OpenFileAck": "success:1:bool file_id:2:sfixed32 message:3:string",
    "ResumeSessionAck": "success:1:bool message:2:string",
    "ErrorData": "severity:1:ErrorSeverity tags:2:*string message:3:string data:4:string",
    # carta-protobuf request/scripting.proto
    "ScriptingRequest": "scripting_request_id:1:sfixed32 target:2:string action:3:string "
    "parameters:4:string async:5:bool return_path:6:string",
    "ScriptingResponse": "scripting_request_id:1:sfixed32 success:2:bool message:3:string "
    "response:4:string",
}

# Which message a request event carries, and which a reply event carries.
EVENT_MESSAGES = {
    EventType.REGISTER_VIEWER: "RegisterViewer",
    EventType.REGISTER_VIEWER_ACK: "RegisterViewerAck",
    EventType.FILE_LIST_REQUEST: "FileListRequest",
    EventType.FILE_LIST_RESPONSE: "FileListResponse",
    EventType.REGION_LIST_REQUEST: "RegionListRequest",
    EventType.REGION_LIST_RESPONSE: "RegionListResponse",
    EventType.STOP_FILE_LIST: "StopFileList",
    EventType.FILE_INFO_REQUEST: "FileInfoRequest",
    EventType.FILE_INFO_RESPONSE: "FileInfoResponse",
    EventType.OPEN_FILE: "OpenFile",
    EventType.OPEN_FILE_ACK: "OpenFileAck",
    EventType.RESUME_SESSION_ACK: "ResumeSessionAck",
    EventType.ERROR_DATA: "ErrorData",
    EventType.SCRIPTING_REQUEST: "ScriptingRequest",
    EventType.SCRIPTING_RESPONSE: "ScriptingResponse",
}

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _F.TYPE_STRING,
    "bool": _F.TYPE_BOOL,
    "fixed32": _F.TYPE_FIXED32,
    "sfixed32": _F.TYPE_SFIXED32,
    "sfixed64": _F.TYPE_SFIXED64,
}


def _add_field(message, name, number, kind):
    """Add one field (scalar, enum, message, repeated or map) to a DescriptorProto."""
    field = message.field.add(name=name, number=int(number), label=_F.LABEL_OPTIONAL)
    if kind == "map":
        entry = message.nested_type.add(name=name.title().replace("_", "") + "Entry")
        entry.options.map_entry = True
        _add_field(entry, "key", 1, "string")
        _add_field(entry, "value", 2, "string")
        field.label, field.type = _F.LABEL_REPEATED, _F.TYPE_MESSAGE
        field.type_name = f".CARTA.{message.name}.{entry.name}"
        return
    if kind.startswith("*"):
        field.label, kind = _F.LABEL_REPEATED, kind[1:]
    if kind in _SCALARS:
        field.type = _SCALARS[kind]
    else:
        field.type = _F.TYPE_ENUM if kind in _ENUMS else _F.TYPE_MESSAGE
        field.type_name = f".CARTA.{kind}"


def _build():
    proto = descriptor_pb2.FileDescriptorProto(
        name="carta_standin_icd.proto", package="CARTA", syntax="proto3"
    )
    for name, values in _ENUMS.items():
        enum_proto = proto.enum_type.add(name=name)
        for number, value in enumerate(values.split()):
            enum_proto.value.add(name=value, number=number)
    for name, spec in _MESSAGES.items():
        message = proto.message_type.add(name=name)
        for field in spec.split():
            _add_field(message, *field.split(":"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return SimpleNamespace(
        **{
            name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"CARTA.{name}"))
            for name in _MESSAGES
        }
    )


#: Message classes by name, e.g. ``messages.FileListResponse``.
messages = _build()


def _int_enum(name):
    values = enum.IntEnum(name, _ENUMS[name].split(), start=0)
    values.__module__ = __name__
    return values


SessionType = _int_enum("SessionType")
FileType = _int_enum("FileType")
FileListFilterMode = _int_enum("FileListFilterMode")
FileListType = _int_enum("FileListType")
ErrorSeverity = _int_enum("ErrorSeverity")


def message_class(name):
    """The protobuf class for a CARTA message name, e.g. ``message_class("RegisterViewer")``."""
    return getattr(messages, name)


def encode_message(event_type, request_id, msg, icd_version=ICD_VERSION):
    """One binary websocket frame: header + serialised ``msg`` (a message instance or bytes)."""
    body = msg if isinstance(msg, bytes) else msg.SerializeToString()
    return HEADER.pack(int(event_type), icd_version, request_id) + body


def decode_header(frame):
    """``(event_type, icd_version, request_id, payload)`` of a binary frame.

    ``event_type`` is an :class:`EventType` when known, else the raw number.
    Raises ``ValueError`` for frames shorter than the header.
    """
    if len(frame) < HEADER.size:
        raise ValueError(f"ICD frame of {len(frame)} bytes is shorter than its header")
    event_type, icd_version, request_id = HEADER.unpack_from(frame)
    try:
        event_type = EventType(event_type)
    except ValueError:
        pass  # unknown to ICD 30: keep the number
    return event_type, icd_version, request_id, bytes(frame[HEADER.size :])


def decode_message(frame):
    """``(event_type, icd_version, request_id, message)``; ``message`` is parsed when the event
    type is in :data:`EVENT_MESSAGES`, else the raw payload bytes."""
    event_type, icd_version, request_id, payload = decode_header(frame)
    name = EVENT_MESSAGES.get(event_type)
    return (
        event_type,
        icd_version,
        request_id,
        (message_class(name).FromString(payload) if name else payload),
    )
