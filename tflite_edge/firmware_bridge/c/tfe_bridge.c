/*
 * tflite-edge serial bridge: framing (COBS + CRC-32) and message codec. See tfe_bridge.h.
 * No dynamic allocation; every length read from the link is checked before it is used.
 */
#include "tfe_bridge.h"

#include <float.h>
#include <string.h>

/* ---- little-endian helpers ------------------------------------------------------------- */

static void put_u16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ---- CRC-32 ------------------------------------------------------------------------------ */

uint32_t tfe_crc32(uint32_t crc, const uint8_t *data, size_t len) {
  /* Bitwise, reflected polynomial 0xEDB88320: no 1 KB table in flash; frames are short. */
  crc = ~crc;
  for (size_t i = 0; i < len; i++) {
    crc ^= data[i];
    for (int bit = 0; bit < 8; bit++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

/* ---- frames ------------------------------------------------------------------------------ */

/* COBS-encodes the concatenation of up to three segments without copying them together. */
typedef struct {
  const uint8_t *ptr[3];
  size_t len[3];
} segments;

int tfe_frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, size_t payload_len, uint8_t *out,
                     size_t out_cap, size_t *out_len) {
  if (payload_len > 0xFFFFu) return TFE_ERR_TOO_LARGE;
  uint8_t header[TFE_HEADER_BYTES], crc_bytes[TFE_CRC_BYTES];
  header[0] = TFE_PROTOCOL_VERSION;
  header[1] = type;
  put_u16(header + 2, seq);
  put_u16(header + 4, (uint16_t)payload_len);
  uint32_t crc = tfe_crc32(0, header, sizeof header);
  crc = tfe_crc32(crc, payload, payload_len);
  put_u32(crc_bytes, crc);
  segments s = {{header, payload, crc_bytes}, {sizeof header, payload_len, sizeof crc_bytes}};

  size_t body = TFE_HEADER_BYTES + payload_len + TFE_CRC_BYTES;
  if (out_cap < body + body / 254 + 1 + 2) return TFE_ERR_SPACE;
  size_t o = 0;
  out[o++] = 0x00; /* leading delimiter: flushes a torn frame at the receiver */
  size_t code_pos = o++;
  uint8_t code = 1;
  for (int k = 0; k < 3; k++) {
    for (size_t i = 0; i < s.len[k]; i++) {
      uint8_t b = s.ptr[k][i];
      if (code == 0xFF) { /* block full: open the next one only when another byte comes */
        out[code_pos] = code;
        code_pos = o++;
        code = 1;
      }
      if (b == 0) {
        out[code_pos] = code;
        code_pos = o++;
        code = 1;
      } else {
        out[o++] = b;
        code++;
      }
    }
  }
  out[code_pos] = code;
  out[o++] = 0x00;
  *out_len = o;
  return TFE_OK;
}

int tfe_frame_decode(uint8_t *buf, size_t len, tfe_frame *frame) {
  if (len > TFE_MAX_ENCODED(TFE_MAX_PAYLOAD)) return TFE_ERR_TOO_LARGE;
  /* COBS decode in place: the write position never passes the read position. */
  size_t i = 0, o = 0;
  while (i < len) {
    uint8_t code = buf[i++];
    if (code == 0) return TFE_ERR_COBS;
    size_t n = (size_t)code - 1;
    if (n > len - i) return TFE_ERR_COBS;
    memmove(buf + o, buf + i, n);
    o += n;
    i += n;
    if (code != 0xFF && i < len) buf[o++] = 0;
  }
  if (o < TFE_HEADER_BYTES + TFE_CRC_BYTES) return TFE_ERR_SHORT;
  uint16_t length = get_u16(buf + 4);
  if ((size_t)length != o - TFE_HEADER_BYTES - TFE_CRC_BYTES) return TFE_ERR_LENGTH;
  if (get_u32(buf + o - TFE_CRC_BYTES) != tfe_crc32(0, buf, o - TFE_CRC_BYTES)) return TFE_ERR_CRC;
  if (buf[0] != TFE_PROTOCOL_VERSION) return TFE_ERR_VERSION;
  if (length > TFE_MAX_PAYLOAD) return TFE_ERR_TOO_LARGE;
  frame->version = buf[0];
  frame->type = buf[1];
  frame->seq = get_u16(buf + 2);
  frame->payload = buf + TFE_HEADER_BYTES;
  frame->payload_len = length;
  return TFE_OK;
}

void tfe_decoder_init(tfe_decoder *dec) {
  dec->len = 0;
  dec->discarding = 0;
  dec->frames = 0;
  dec->dropped = 0;
}

int tfe_decoder_push(tfe_decoder *dec, uint8_t byte, tfe_frame *frame) {
  if (byte != 0) {
    if (dec->discarding) return 0;
    if (dec->len >= sizeof dec->buf) { /* longer than any legal frame: skip to the next delimiter */
      dec->len = 0;
      dec->discarding = 1;
      return 0;
    }
    dec->buf[dec->len++] = byte;
    return 0;
  }
  if (dec->discarding) {
    dec->discarding = 0;
    dec->dropped++;
    return TFE_ERR_TOO_LARGE;
  }
  if (dec->len == 0) return 0; /* back-to-back delimiters */
  size_t len = dec->len;
  dec->len = 0;
  int status = tfe_frame_decode(dec->buf, len, frame);
  if (status != TFE_OK) {
    dec->dropped++;
    return status;
  }
  dec->frames++;
  return 1;
}

/* ---- messages ---------------------------------------------------------------------------- */

size_t tfe_dtype_bytes(uint8_t dtype) {
  switch (dtype) {
    case TFE_INT8: case TFE_UINT8: case TFE_BOOL: return 1;
    case TFE_INT16: case TFE_FLOAT16: return 2;
    case TFE_INT32: case TFE_FLOAT32: return 4;
    case TFE_INT64: return 8;
    default: return 0;
  }
}

static float get_f32(const uint8_t *p) {
  uint32_t bits = get_u32(p);
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

static void put_f32(uint8_t *p, float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof bits);
  put_u32(p, bits);
}

/* Bounded reader over one payload; any overrun sets ok = 0 and returns zeros. */
typedef struct {
  const uint8_t *p;
  size_t len, pos;
  int ok;
} reader;

static const uint8_t *take(reader *r, size_t n) {
  if (!r->ok || n > r->len - r->pos) {
    r->ok = 0;
    return NULL;
  }
  const uint8_t *at = r->p + r->pos;
  r->pos += n;
  return at;
}

static uint8_t rd_u8(reader *r) { const uint8_t *p = take(r, 1); return p ? p[0] : 0; }
static uint16_t rd_u16(reader *r) { const uint8_t *p = take(r, 2); return p ? get_u16(p) : 0; }
static uint32_t rd_u32(reader *r) { const uint8_t *p = take(r, 4); return p ? get_u32(p) : 0; }
static float rd_f32(reader *r) { const uint8_t *p = take(r, 4); return p ? get_f32(p) : 0.0f; }

static const char *rd_text(reader *r, uint8_t *len) {
  *len = rd_u8(r);
  return (const char *)take(r, *len);
}

/* One tensor description, and its data when with_data (INVOKE, RESULT). */
static int rd_tensor(reader *r, tfe_tensor *t, int with_data) {
  t->index = with_data ? rd_u8(r) : 0;
  t->dtype = rd_u8(r);
  t->rank = rd_u8(r);
  if (!r->ok) return TFE_ERR_MESSAGE;
  size_t item = tfe_dtype_bytes(t->dtype);
  if (item == 0 || t->rank > TFE_MAX_RANK) return TFE_ERR_MESSAGE;
  /* Count bytes while bounding by what remains, so the product cannot overflow. */
  uint64_t bytes = item;
  for (uint8_t d = 0; d < t->rank; d++) {
    t->dims[d] = rd_u16(r);
    if (t->dims[d] == 0) return TFE_ERR_MESSAGE;
    bytes *= t->dims[d];
    if (bytes > r->len) bytes = (uint64_t)r->len + 1; /* saturate: larger than the payload anyway */
  }
  t->scale = rd_f32(r);
  t->zero_point = (int32_t)rd_u32(r);
  if (!r->ok) return TFE_ERR_MESSAGE;
  if (!(t->scale >= 0.0f) || t->scale > FLT_MAX) return TFE_ERR_MESSAGE; /* NaN, negative or inf */
  t->data = NULL;
  t->data_len = 0;
  if (with_data) {
    if (bytes > r->len - r->pos) return TFE_ERR_MESSAGE;
    t->data = take(r, (size_t)bytes);
    t->data_len = (uint32_t)bytes;
  }
  return r->ok ? TFE_OK : TFE_ERR_MESSAGE;
}

static int rd_tensors(reader *r, uint8_t *count, tfe_tensor *out, int with_data) {
  *count = rd_u8(r);
  if (!r->ok || *count > 16 || *count > TFE_MAX_TENSORS) return TFE_ERR_MESSAGE;
  for (uint8_t i = 0; i < *count; i++) {
    int status = rd_tensor(r, &out[i], with_data);
    if (status != TFE_OK) return status;
  }
  return TFE_OK;
}

int tfe_message_decode(uint8_t type, const uint8_t *payload, size_t len, tfe_message *m) {
  reader r = {payload, len, 0, 1};
  int status = TFE_OK;
  m->type = type;
  switch (type) {
    case TFE_HELLO:
      m->u.hello.protocol_version = rd_u8(&r);
      m->u.hello.max_payload = rd_u16(&r);
      m->u.hello.max_message = rd_u32(&r);
      break;
    case TFE_CAPABILITIES:
      m->u.capabilities.protocol_version = rd_u8(&r);
      m->u.capabilities.model_slots = rd_u8(&r);
      m->u.capabilities.max_payload = rd_u16(&r);
      m->u.capabilities.arena_bytes = rd_u32(&r);
      m->u.capabilities.max_model_bytes = rd_u32(&r);
      m->u.capabilities.max_message_bytes = rd_u32(&r);
      m->u.capabilities.board = rd_text(&r, &m->u.capabilities.board_len);
      m->u.capabilities.firmware = rd_text(&r, &m->u.capabilities.firmware_len);
      break;
    case TFE_LOAD_BEGIN:
      m->u.load_begin.slot = rd_u8(&r);
      m->u.load_begin.total_bytes = rd_u32(&r);
      m->u.load_begin.crc32 = rd_u32(&r);
      break;
    case TFE_LOAD_CHUNK:
      m->u.load_chunk.slot = rd_u8(&r);
      m->u.load_chunk.offset = rd_u32(&r);
      if (!r.ok || len - r.pos > 0xFFFFu) return TFE_ERR_MESSAGE;
      m->u.load_chunk.data_len = (uint16_t)(len - r.pos);
      m->u.load_chunk.data = take(&r, m->u.load_chunk.data_len);
      break;
    case TFE_LOAD_ACK:
      m->u.load_ack.slot = rd_u8(&r);
      m->u.load_ack.next_offset = rd_u32(&r);
      break;
    case TFE_LOAD_END:
      m->u.load_end.slot = rd_u8(&r);
      break;
    case TFE_MODEL_INFO:
      m->u.model_info.slot = rd_u8(&r);
      m->u.model_info.arena_used = rd_u32(&r);
      status = rd_tensors(&r, &m->u.model_info.n_inputs, m->u.model_info.inputs, 0);
      if (status == TFE_OK) status = rd_tensors(&r, &m->u.model_info.n_outputs, m->u.model_info.outputs, 0);
      break;
    case TFE_INVOKE:
      m->u.invoke.slot = rd_u8(&r);
      status = rd_tensors(&r, &m->u.invoke.n_tensors, m->u.invoke.tensors, 1);
      break;
    case TFE_RESULT:
      m->u.result.latency_us = rd_u32(&r);
      status = rd_tensors(&r, &m->u.result.n_tensors, m->u.result.tensors, 1);
      break;
    case TFE_GET_TELEMETRY:
      break;
    case TFE_TELEMETRY:
      m->u.telemetry.uptime_ms = rd_u32(&r);
      m->u.telemetry.power_mw = rd_f32(&r);
      m->u.telemetry.voltage_mv = rd_f32(&r);
      m->u.telemetry.temperature_c = rd_f32(&r);
      m->u.telemetry.free_memory_bytes = rd_u32(&r);
      m->u.telemetry.invokes = rd_u32(&r);
      break;
    case TFE_ERROR:
      m->u.error.code = rd_u16(&r);
      m->u.error.text = rd_text(&r, &m->u.error.text_len);
      break;
    case TFE_FRAGMENT:
    case TFE_FRAGMENT_REPLY:
      m->u.fragment.inner_type = rd_u8(&r);
      m->u.fragment.index = rd_u16(&r);
      m->u.fragment.count = rd_u16(&r);
      if (!r.ok || m->u.fragment.index >= m->u.fragment.count || m->u.fragment.inner_type == TFE_FRAGMENT ||
          m->u.fragment.inner_type == TFE_FRAGMENT_REPLY || len - r.pos > 0xFFFFu)
        return TFE_ERR_MESSAGE;
      m->u.fragment.data_len = (uint16_t)(len - r.pos);
      m->u.fragment.data = take(&r, m->u.fragment.data_len);
      break;
    default:
      return TFE_ERR_TYPE;
  }
  if (status != TFE_OK) return status;
  if (!r.ok || r.pos != len) return TFE_ERR_MESSAGE; /* short, or trailing bytes */
  return TFE_OK;
}

/* Bounded writer; any overflow sets ok = 0. */
typedef struct {
  uint8_t *p;
  size_t cap, pos;
  int ok;
} writer;

static uint8_t *room(writer *w, size_t n) {
  if (!w->ok || n > w->cap - w->pos) {
    w->ok = 0;
    return NULL;
  }
  uint8_t *at = w->p + w->pos;
  w->pos += n;
  return at;
}

static void wr_u8(writer *w, uint8_t v) { uint8_t *p = room(w, 1); if (p) p[0] = v; }
static void wr_u16(writer *w, uint16_t v) { uint8_t *p = room(w, 2); if (p) put_u16(p, v); }
static void wr_u32(writer *w, uint32_t v) { uint8_t *p = room(w, 4); if (p) put_u32(p, v); }
static void wr_f32(writer *w, float v) { uint8_t *p = room(w, 4); if (p) put_f32(p, v); }

static void wr_bytes(writer *w, const void *src, size_t n) {
  uint8_t *p = room(w, n);
  if (p && n) memcpy(p, src, n);
}

static void wr_text(writer *w, const char *text, uint8_t len) {
  wr_u8(w, len);
  wr_bytes(w, text, len);
}

static void wr_tensors(writer *w, uint8_t count, const tfe_tensor *ts, int with_data) {
  if (count > TFE_MAX_TENSORS) {
    w->ok = 0;
    return;
  }
  wr_u8(w, count);
  for (uint8_t i = 0; i < count; i++) {
    const tfe_tensor *t = &ts[i];
    if (t->rank > TFE_MAX_RANK) {
      w->ok = 0;
      return;
    }
    if (with_data) wr_u8(w, t->index);
    wr_u8(w, t->dtype);
    wr_u8(w, t->rank);
    for (uint8_t d = 0; d < t->rank; d++) wr_u16(w, t->dims[d]);
    wr_f32(w, t->scale);
    wr_u32(w, (uint32_t)t->zero_point);
    if (with_data) wr_bytes(w, t->data, t->data_len);
  }
}

int tfe_message_encode(const tfe_message *m, uint8_t *payload, size_t cap, size_t *out_len) {
  writer w = {payload, cap, 0, 1};
  switch (m->type) {
    case TFE_HELLO:
      wr_u8(&w, m->u.hello.protocol_version);
      wr_u16(&w, m->u.hello.max_payload);
      wr_u32(&w, m->u.hello.max_message);
      break;
    case TFE_CAPABILITIES:
      wr_u8(&w, m->u.capabilities.protocol_version);
      wr_u8(&w, m->u.capabilities.model_slots);
      wr_u16(&w, m->u.capabilities.max_payload);
      wr_u32(&w, m->u.capabilities.arena_bytes);
      wr_u32(&w, m->u.capabilities.max_model_bytes);
      wr_u32(&w, m->u.capabilities.max_message_bytes);
      wr_text(&w, m->u.capabilities.board, m->u.capabilities.board_len);
      wr_text(&w, m->u.capabilities.firmware, m->u.capabilities.firmware_len);
      break;
    case TFE_LOAD_BEGIN:
      wr_u8(&w, m->u.load_begin.slot);
      wr_u32(&w, m->u.load_begin.total_bytes);
      wr_u32(&w, m->u.load_begin.crc32);
      break;
    case TFE_LOAD_CHUNK:
      wr_u8(&w, m->u.load_chunk.slot);
      wr_u32(&w, m->u.load_chunk.offset);
      wr_bytes(&w, m->u.load_chunk.data, m->u.load_chunk.data_len);
      break;
    case TFE_LOAD_ACK:
      wr_u8(&w, m->u.load_ack.slot);
      wr_u32(&w, m->u.load_ack.next_offset);
      break;
    case TFE_LOAD_END:
      wr_u8(&w, m->u.load_end.slot);
      break;
    case TFE_MODEL_INFO:
      wr_u8(&w, m->u.model_info.slot);
      wr_u32(&w, m->u.model_info.arena_used);
      wr_tensors(&w, m->u.model_info.n_inputs, m->u.model_info.inputs, 0);
      wr_tensors(&w, m->u.model_info.n_outputs, m->u.model_info.outputs, 0);
      break;
    case TFE_INVOKE:
      wr_u8(&w, m->u.invoke.slot);
      wr_tensors(&w, m->u.invoke.n_tensors, m->u.invoke.tensors, 1);
      break;
    case TFE_RESULT:
      wr_u32(&w, m->u.result.latency_us);
      wr_tensors(&w, m->u.result.n_tensors, m->u.result.tensors, 1);
      break;
    case TFE_GET_TELEMETRY:
      break;
    case TFE_TELEMETRY:
      wr_u32(&w, m->u.telemetry.uptime_ms);
      wr_f32(&w, m->u.telemetry.power_mw);
      wr_f32(&w, m->u.telemetry.voltage_mv);
      wr_f32(&w, m->u.telemetry.temperature_c);
      wr_u32(&w, m->u.telemetry.free_memory_bytes);
      wr_u32(&w, m->u.telemetry.invokes);
      break;
    case TFE_ERROR:
      wr_u16(&w, m->u.error.code);
      wr_text(&w, m->u.error.text, m->u.error.text_len);
      break;
    case TFE_FRAGMENT:
    case TFE_FRAGMENT_REPLY:
      wr_u8(&w, m->u.fragment.inner_type);
      wr_u16(&w, m->u.fragment.index);
      wr_u16(&w, m->u.fragment.count);
      wr_bytes(&w, m->u.fragment.data, m->u.fragment.data_len);
      break;
    default:
      return TFE_ERR_TYPE;
  }
  if (!w.ok) return TFE_ERR_SPACE;
  *out_len = w.pos;
  return TFE_OK;
}

/* ---- fragments --------------------------------------------------------------------------- */

void tfe_reassembler_init(tfe_reassembler *r, uint8_t *buf, size_t cap) {
  r->buf = buf;
  r->cap = cap;
  r->len = 0;
  r->seq = r->next = r->count = 0;
  r->inner_type = 0;
  r->active = 0;
  r->dropped = 0;
}

int tfe_reassembler_push(tfe_reassembler *r, uint16_t seq, const tfe_message *f, uint8_t *type,
                         const uint8_t **payload, size_t *len) {
  if (f->type != TFE_FRAGMENT && f->type != TFE_FRAGMENT_REPLY) return TFE_ERR_TYPE;
  if (f->u.fragment.index == 0) { /* a new message replaces any partial one */
    r->active = 1;
    r->len = 0;
    r->next = 0;
    r->seq = seq;
    r->count = f->u.fragment.count;
    r->inner_type = f->u.fragment.inner_type;
  } else if (!r->active || seq != r->seq || f->u.fragment.count != r->count ||
             f->u.fragment.inner_type != r->inner_type || f->u.fragment.index != r->next) {
    if (r->active) r->dropped++;
    r->active = 0; /* a fragment was lost: drop the rest until the retry starts at index 0 */
    return 0;
  }
  if (f->u.fragment.data_len > r->cap - r->len) {
    r->active = 0;
    return TFE_ERR_TOO_LARGE;
  }
  if (f->u.fragment.data_len) memcpy(r->buf + r->len, f->u.fragment.data, f->u.fragment.data_len);
  r->len += f->u.fragment.data_len;
  r->next++;
  if (r->next < r->count) return 0;
  r->active = 0;
  *type = r->inner_type;
  *payload = r->buf;
  *len = r->len;
  return 1;
}

uint32_t tfe_fragment_count(size_t len, size_t max_payload) {
  if (len <= max_payload) return 1;
  if (max_payload <= TFE_FRAGMENT_HEADER_BYTES) return 0;
  size_t chunk = max_payload - TFE_FRAGMENT_HEADER_BYTES;
  return (uint32_t)((len + chunk - 1) / chunk);
}
