/*
 * tflite-edge serial bridge: framing and message codec for microcontroller firmware.
 *
 * The same wire format as tflite_edge/firmware_bridge/framing.py and messages.py
 * (docs/serial-protocol.md). C99, no dynamic allocation, no dependencies beyond
 * <stdint.h>, <stddef.h> and <string.h>. Decoded messages point into the caller's frame
 * buffer (zero copy): use them before feeding the decoder more bytes.
 *
 * Typical firmware loop (see docs/serial-protocol.md for a TFLite Micro sketch):
 *
 *   static tfe_decoder dec;            // one receive buffer, sized by TFE_MAX_PAYLOAD
 *   tfe_decoder_init(&dec);
 *   for (;;) {
 *     int c = uart_read_byte();
 *     tfe_frame frame;
 *     if (c < 0 || tfe_decoder_push(&dec, (uint8_t)c, &frame) != 1) continue;
 *     tfe_message req;
 *     if (tfe_message_decode(frame.type, frame.payload, frame.payload_len, &req) != TFE_OK) {
 *       reply_error(frame.seq, TFE_E_BAD_MESSAGE, "malformed request");
 *       continue;
 *     }
 *     handle(&req, frame.seq);         // build a reply tfe_message, tfe_message_encode, tfe_frame_encode
 *   }
 */
#ifndef TFE_BRIDGE_H_
#define TFE_BRIDGE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TFE_PROTOCOL_VERSION 1
#define TFE_HEADER_BYTES 6
#define TFE_CRC_BYTES 4
#define TFE_MAX_RANK 6

/* Largest payload this firmware accepts; advertise it in CAPABILITIES. Override at build time. */
#ifndef TFE_MAX_PAYLOAD
#define TFE_MAX_PAYLOAD 1024
#endif
/* Tensors per message this firmware can hold (the protocol allows up to 16). */
#ifndef TFE_MAX_TENSORS
#define TFE_MAX_TENSORS 16
#endif

/* COBS-encoded size of a body carrying n payload bytes (delimiters not included). */
#define TFE_MAX_ENCODED(n) ((n) + TFE_HEADER_BYTES + TFE_CRC_BYTES + ((n) + TFE_HEADER_BYTES + TFE_CRC_BYTES) / 254 + 1)
/* Wire size of a whole frame carrying n payload bytes, both delimiters included. */
#define TFE_MAX_WIRE(n) (TFE_MAX_ENCODED(n) + 2)

typedef enum {
  TFE_OK = 0,
  TFE_ERR_SPACE = -1,     /* output buffer too small */
  TFE_ERR_COBS = -2,      /* bytes are not valid COBS */
  TFE_ERR_SHORT = -3,     /* frame shorter than header + CRC */
  TFE_ERR_LENGTH = -4,    /* length field disagrees with the frame */
  TFE_ERR_CRC = -5,       /* CRC-32 mismatch: corrupted on the link */
  TFE_ERR_VERSION = -6,   /* other protocol version */
  TFE_ERR_TOO_LARGE = -7, /* longer than TFE_MAX_PAYLOAD allows */
  TFE_ERR_MESSAGE = -8,   /* payload malformed or out of bounds */
  TFE_ERR_TYPE = -9       /* unknown message type */
} tfe_status;

enum {
  TFE_HELLO = 0x01,
  TFE_LOAD_BEGIN = 0x02,
  TFE_LOAD_CHUNK = 0x03,
  TFE_LOAD_END = 0x04,
  TFE_INVOKE = 0x05,
  TFE_GET_TELEMETRY = 0x06,
  TFE_FRAGMENT = 0x08,
  TFE_CAPABILITIES = 0x81,
  TFE_LOAD_ACK = 0x82,
  TFE_MODEL_INFO = 0x84,
  TFE_RESULT = 0x85,
  TFE_TELEMETRY = 0x86,
  TFE_FRAGMENT_REPLY = 0x88,
  TFE_ERROR = 0xFF
};

/* Codes carried by an ERROR reply. */
enum {
  TFE_E_UNKNOWN_TYPE = 1,
  TFE_E_BAD_MESSAGE = 2,
  TFE_E_VERSION = 3,
  TFE_E_BAD_SLOT = 4,
  TFE_E_NO_MODEL = 5,
  TFE_E_LOAD_ORDER = 6,
  TFE_E_MODEL_TOO_LARGE = 7,
  TFE_E_CHECKSUM = 8,
  TFE_E_ARENA_TOO_SMALL = 9,
  TFE_E_UNSUPPORTED_OP = 10,
  TFE_E_INVOKE_FAILED = 11,
  TFE_E_TENSOR_MISMATCH = 12,
  TFE_E_INTERNAL = 13
};

/* Tensor dtype codes are TfLiteType values: copy tensor->type directly. */
enum {
  TFE_FLOAT32 = 1,
  TFE_INT32 = 2,
  TFE_UINT8 = 3,
  TFE_INT64 = 4,
  TFE_BOOL = 6,
  TFE_INT16 = 7,
  TFE_INT8 = 9,
  TFE_FLOAT16 = 10
};

/* ---- checksums and byte stuffing ------------------------------------------------------ */

/* CRC-32 (IEEE 802.3, same as zlib.crc32). Start with crc = 0, chain calls for streams. */
uint32_t tfe_crc32(uint32_t crc, const uint8_t *data, size_t len);

/* ---- frames --------------------------------------------------------------------------- */

typedef struct {
  uint8_t version;
  uint8_t type;
  uint16_t seq;
  const uint8_t *payload; /* points into the decoder's buffer */
  uint16_t payload_len;
} tfe_frame;

/* Writes 0x00 COBS(header payload crc) 0x00 to out. Returns TFE_OK or TFE_ERR_SPACE. */
int tfe_frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, size_t payload_len, uint8_t *out,
                     size_t out_cap, size_t *out_len);

/* Decodes one COBS-encoded body (without delimiters) in place and checks it. */
int tfe_frame_decode(uint8_t *encoded, size_t len, tfe_frame *frame);

/* Streaming receiver: push bytes one at a time as the UART delivers them. */
typedef struct {
  uint8_t buf[TFE_MAX_ENCODED(TFE_MAX_PAYLOAD)];
  size_t len;
  uint8_t discarding; /* skipping an overlong run up to the next delimiter */
  uint32_t frames;    /* intact frames delivered */
  uint32_t dropped;   /* corrupt, torn or overlong frames discarded */
} tfe_decoder;

void tfe_decoder_init(tfe_decoder *dec);

/* Returns 1 when byte completes an intact frame (filled into *frame, valid until the next
 * push), 0 when more bytes are needed, or a negative tfe_status when a frame was dropped. */
int tfe_decoder_push(tfe_decoder *dec, uint8_t byte, tfe_frame *frame);

/* ---- messages ------------------------------------------------------------------------- */

typedef struct {
  uint8_t index; /* position among the model's inputs or outputs */
  uint8_t dtype; /* TFE_INT8, ... (TfLiteType) */
  uint8_t rank;
  uint16_t dims[TFE_MAX_RANK];
  float scale; /* 0 when not quantized */
  int32_t zero_point;
  const uint8_t *data; /* NULL in MODEL_INFO descriptions */
  uint32_t data_len;
} tfe_tensor;

typedef struct {
  uint8_t type;
  union {
    struct {
      uint8_t protocol_version;
      uint16_t max_payload;
      uint32_t max_message; /* largest reply the host joins from fragments */
    } hello;
    struct {
      uint8_t protocol_version, model_slots;
      uint16_t max_payload;
      uint32_t arena_bytes, max_model_bytes;
      uint32_t max_message_bytes; /* largest request this firmware joins from fragments */
      const char *board;
      uint8_t board_len;
      const char *firmware;
      uint8_t firmware_len;
    } capabilities;
    struct {
      uint8_t slot;
      uint32_t total_bytes, crc32;
    } load_begin;
    struct {
      uint8_t slot;
      uint32_t offset;
      const uint8_t *data;
      uint16_t data_len;
    } load_chunk;
    struct {
      uint8_t slot;
      uint32_t next_offset;
    } load_ack;
    struct {
      uint8_t slot;
    } load_end;
    struct {
      uint8_t slot;
      uint32_t arena_used;
      uint8_t n_inputs, n_outputs;
      tfe_tensor inputs[TFE_MAX_TENSORS];
      tfe_tensor outputs[TFE_MAX_TENSORS];
    } model_info;
    struct {
      uint8_t slot;
      uint8_t n_tensors;
      tfe_tensor tensors[TFE_MAX_TENSORS];
    } invoke;
    struct {
      uint32_t latency_us;
      uint8_t n_tensors;
      tfe_tensor tensors[TFE_MAX_TENSORS];
    } result;
    struct {
      uint32_t uptime_ms;
      float power_mw, voltage_mv, temperature_c;
      uint32_t free_memory_bytes, invokes;
    } telemetry;
    struct {
      uint16_t code;
      const char *text;
      uint8_t text_len;
    } error;
    struct { /* TFE_FRAGMENT and TFE_FRAGMENT_REPLY */
      uint8_t inner_type;
      uint16_t index, count;
      const uint8_t *data;
      uint16_t data_len;
    } fragment;
  } u;
} tfe_message;

/* Bytes of one element of dtype, or 0 for an unknown code. */
size_t tfe_dtype_bytes(uint8_t dtype);

/* Parses a payload; pointers in *msg refer into payload. */
int tfe_message_decode(uint8_t type, const uint8_t *payload, size_t len, tfe_message *msg);

/* Serialises msg into payload[0..cap). */
int tfe_message_encode(const tfe_message *msg, uint8_t *payload, size_t cap, size_t *out_len);

/* ---- messages larger than one frame ----------------------------------------------------- */

#define TFE_FRAGMENT_HEADER_BYTES 5

/* Joins FRAGMENT frames into the caller's buffer (its size is the max_message_bytes to
 * announce in CAPABILITIES). Fragments arrive in order with the message's sequence number. */
typedef struct {
  uint8_t *buf;
  size_t cap, len;
  uint16_t seq, next, count;
  uint8_t inner_type, active;
  uint32_t dropped; /* partial messages abandoned because a fragment was lost */
} tfe_reassembler;

void tfe_reassembler_init(tfe_reassembler *r, uint8_t *buf, size_t cap);

/* Adds one decoded fragment. Returns 1 with the joined message in *type, *payload, *len
 * (valid until the next push), 0 while more are needed or after a lost fragment (drop and
 * wait: the host retries), TFE_ERR_TOO_LARGE when the message exceeds the buffer. */
int tfe_reassembler_push(tfe_reassembler *r, uint16_t seq, const tfe_message *fragment, uint8_t *type,
                         const uint8_t **payload, size_t *len);

/* Number of fragments for a payload of len bytes under a frame limit of max_payload. */
uint32_t tfe_fragment_count(size_t len, size_t max_payload);

#ifdef __cplusplus
}
#endif

#endif /* TFE_BRIDGE_H_ */
