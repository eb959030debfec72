/* Test driver for the C codec: reads one hex-encoded byte stream per line on stdin, pushes
 * it through tfe_decoder, and for each frame prints its message in the canonical text form
 * that tests/firmware/vectors.py also produces, then the frame re-encoded by the C side. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tfe_bridge.h"

#ifndef JOIN_BYTES
#define JOIN_BYTES 4096
#endif

/* NaN prints as "nan" whatever its sign bit, as Python's %-formatting does. */
static void pf(float f) {
  if (f != f) printf("nan");
  else printf("%.9g", (double)f);
}

static void hex(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) printf("%02x", p[i]);
}

static void tensors(const char *label, uint8_t n, const tfe_tensor *ts, int with_data) {
  printf(" %s=%u", label, n);
  for (uint8_t i = 0; i < n; i++) {
    const tfe_tensor *t = &ts[i];
    printf(" [");
    if (with_data) printf("%u:", t->index);
    printf("%u:", t->dtype);
    for (uint8_t d = 0; d < t->rank; d++) printf("%sx%u", d ? "" : "s", t->dims[d]);
    printf(":");
    pf(t->scale);
    printf(":%d", (int)t->zero_point);
    if (with_data) {
      printf(":");
      hex(t->data, t->data_len);
    }
    printf("]");
  }
}

static void canonical(const tfe_message *m) {
  switch (m->type) {
    case TFE_HELLO:
      printf("HELLO v=%u max=%u msg=%u", m->u.hello.protocol_version, m->u.hello.max_payload,
             (unsigned)m->u.hello.max_message);
      break;
    case TFE_CAPABILITIES:
      printf("CAPS v=%u slots=%u max=%u arena=%u model=%u msg=%u board=", m->u.capabilities.protocol_version,
             m->u.capabilities.model_slots, m->u.capabilities.max_payload, (unsigned)m->u.capabilities.arena_bytes,
             (unsigned)m->u.capabilities.max_model_bytes, (unsigned)m->u.capabilities.max_message_bytes);
      hex((const uint8_t *)m->u.capabilities.board, m->u.capabilities.board_len);
      printf(" fw=");
      hex((const uint8_t *)m->u.capabilities.firmware, m->u.capabilities.firmware_len);
      break;
    case TFE_LOAD_BEGIN:
      printf("LOAD_BEGIN slot=%u total=%u crc=%u", m->u.load_begin.slot, (unsigned)m->u.load_begin.total_bytes,
             (unsigned)m->u.load_begin.crc32);
      break;
    case TFE_LOAD_CHUNK:
      printf("LOAD_CHUNK slot=%u off=%u data=", m->u.load_chunk.slot, (unsigned)m->u.load_chunk.offset);
      hex(m->u.load_chunk.data, m->u.load_chunk.data_len);
      break;
    case TFE_LOAD_ACK: printf("LOAD_ACK slot=%u next=%u", m->u.load_ack.slot, (unsigned)m->u.load_ack.next_offset); break;
    case TFE_LOAD_END: printf("LOAD_END slot=%u", m->u.load_end.slot); break;
    case TFE_MODEL_INFO:
      printf("MODEL_INFO slot=%u arena=%u", m->u.model_info.slot, (unsigned)m->u.model_info.arena_used);
      tensors("in", m->u.model_info.n_inputs, m->u.model_info.inputs, 0);
      tensors("out", m->u.model_info.n_outputs, m->u.model_info.outputs, 0);
      break;
    case TFE_INVOKE:
      printf("INVOKE slot=%u", m->u.invoke.slot);
      tensors("t", m->u.invoke.n_tensors, m->u.invoke.tensors, 1);
      break;
    case TFE_RESULT:
      printf("RESULT us=%u", (unsigned)m->u.result.latency_us);
      tensors("t", m->u.result.n_tensors, m->u.result.tensors, 1);
      break;
    case TFE_GET_TELEMETRY: printf("GET_TELEMETRY"); break;
    case TFE_TELEMETRY:
      printf("TELEMETRY up=%u p=", (unsigned)m->u.telemetry.uptime_ms);
      pf(m->u.telemetry.power_mw);
      printf(" v=");
      pf(m->u.telemetry.voltage_mv);
      printf(" t=");
      pf(m->u.telemetry.temperature_c);
      printf(" free=%u n=%u", (unsigned)m->u.telemetry.free_memory_bytes, (unsigned)m->u.telemetry.invokes);
      break;
    case TFE_ERROR:
      printf("ERROR code=%u text=", m->u.error.code);
      hex((const uint8_t *)m->u.error.text, m->u.error.text_len);
      break;
    case TFE_FRAGMENT:
    case TFE_FRAGMENT_REPLY:
      printf("FRAG type=%u inner=%u idx=%u count=%u data=", m->type, m->u.fragment.inner_type, m->u.fragment.index,
             m->u.fragment.count);
      hex(m->u.fragment.data, m->u.fragment.data_len);
      break;
  }
}

static tfe_decoder dec;
static tfe_message msg, joined_msg;
static uint8_t join_buf[JOIN_BYTES];
static tfe_reassembler joiner;
static char line[1 << 20];
static uint8_t payload[TFE_MAX_PAYLOAD];
static uint8_t wire[TFE_MAX_WIRE(TFE_MAX_PAYLOAD)];

int main(void) {
  while (fgets(line, sizeof line, stdin)) {
    tfe_decoder_init(&dec);
    tfe_reassembler_init(&joiner, join_buf, sizeof join_buf);
    for (size_t i = 0; line[i] && line[i + 1] && line[i] != '\n'; i += 2) {
      unsigned byte;
      sscanf(line + i, "%2x", &byte);
      tfe_frame frame;
      int status = tfe_decoder_push(&dec, (uint8_t)byte, &frame);
      if (status != 1) continue;
      printf("FRAME %u %u\n", frame.type, frame.seq);
      status = tfe_message_decode(frame.type, frame.payload, frame.payload_len, &msg);
      if (status != TFE_OK) {
        printf("MSGERR %d\n", status);
        continue;
      }
      printf("MSG ");
      canonical(&msg);
      printf("\n");
      size_t payload_len = 0, wire_len = 0;
      uint16_t seq = frame.seq;
      uint8_t type = frame.type;
      /* frame.payload lives in dec.buf and msg points into it: encode before the next push. */
      if (tfe_message_encode(&msg, payload, sizeof payload, &payload_len) != TFE_OK ||
          tfe_frame_encode(type, seq, payload, payload_len, wire, sizeof wire, &wire_len) != TFE_OK) {
        printf("ENCERR\n");
        continue;
      }
      printf("WIRE ");
      hex(wire, wire_len);
      printf("\n");
      if (msg.type == TFE_FRAGMENT || msg.type == TFE_FRAGMENT_REPLY) {
        uint8_t inner;
        const uint8_t *joined;
        size_t joined_len;
        status = tfe_reassembler_push(&joiner, seq, &msg, &inner, &joined, &joined_len);
        if (status < 0) {
          printf("JOINERR\n");
        } else if (status == 1) {
          if (tfe_message_decode(inner, joined, joined_len, &joined_msg) != TFE_OK) {
            printf("JOINERR\n");
          } else {
            printf("JOINED ");
            canonical(&joined_msg);
            printf("\n");
          }
        }
      }
    }
    printf("END %u %u\n", (unsigned)dec.frames, (unsigned)dec.dropped);
    fflush(stdout);
  }
  return 0;
}
