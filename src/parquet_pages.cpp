// Decompression and value/level decoding of Parquet pages (see parquet_pages.h). Output buffers
// grow with what the decompressor really produces (never with a size a header merely claims), and
// every count read from the data is checked against the bytes that remain.
#include "parquet_pages.h"

#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include <cstring>
#include <stdexcept>

#include "parquet_thrift.h"

namespace mor::parquet {

using json = nlohmann::ordered_json;

void PageContext::fail(const std::string& msg) const {
  throw std::runtime_error(file + ": column '" + column + "': " + msg + " (page at byte " + std::to_string(page_offset) + ")");
}

namespace {

constexpr size_t kGrowStep = size_t{1} << 20;

std::string inflate_gzip(const uint8_t* src, size_t n, size_t expected, const PageContext& ctx) {
  z_stream z{};
  if (inflateInit2(&z, 15 + 32) != Z_OK) ctx.fail("cannot start zlib");  // 32: gzip or zlib header
  std::string out;
  z.next_in = const_cast<Bytef*>(src);
  z.avail_in = static_cast<uInt>(n);
  int rc = Z_OK;
  bool too_much = false;
  for (;;) {
    size_t have = out.size();
    bool full = have >= expected;
    char probe;  // when full, a 1-byte buffer tells whether more output follows
    if (!full) out.resize(std::min(expected, have + kGrowStep));
    z.next_out = reinterpret_cast<Bytef*>(full ? &probe : &out[have]);
    z.avail_out = static_cast<uInt>(full ? 1 : out.size() - have);
    uInt avail_before = z.avail_in;
    rc = inflate(&z, Z_NO_FLUSH);
    size_t produced = (full ? 1 : out.size() - have) - z.avail_out;
    if (full) {
      too_much = produced > 0;
    } else {
      out.resize(have + produced);
    }
    if (rc == Z_STREAM_END && z.avail_in > 0 && !too_much) {  // concatenated gzip members
      inflateReset(&z);
      continue;
    }
    if (too_much || rc == Z_STREAM_END || (rc != Z_OK && rc != Z_BUF_ERROR)) break;
    if (produced == 0 && z.avail_in == avail_before) break;  // no progress: truncated input
  }
  std::string msg = z.msg ? z.msg : "error " + std::to_string(rc);
  inflateEnd(&z);
  if (too_much) ctx.fail("GZIP data gives more than the " + std::to_string(expected) + " bytes the page header says");
  if (rc != Z_STREAM_END && rc != Z_OK && rc != Z_BUF_ERROR) ctx.fail("GZIP data is corrupt: " + msg);
  if (rc != Z_STREAM_END || out.size() != expected)
    ctx.fail("GZIP data gives " + std::to_string(out.size()) + " bytes (stream " + (rc == Z_STREAM_END ? "complete" : "incomplete") +
             "), the page header says " + std::to_string(expected));
  return out;
}

std::string inflate_zstd(const uint8_t* src, size_t n, size_t expected, const PageContext& ctx) {
  unsigned long long claimed = ZSTD_getFrameContentSize(src, n);
  if (claimed == ZSTD_CONTENTSIZE_ERROR) ctx.fail("ZSTD data is not a zstd frame");
  if (claimed != ZSTD_CONTENTSIZE_UNKNOWN && claimed != expected)
    ctx.fail("ZSTD frame holds " + std::to_string(claimed) + " bytes, the page header says " + std::to_string(expected));
  ZSTD_DStream* ds = ZSTD_createDStream();
  if (!ds) ctx.fail("cannot start zstd");
  std::string out;
  ZSTD_inBuffer in{src, n, 0};
  size_t rc = 1;  // 0 once a frame is complete
  bool too_much = false;
  for (;;) {
    size_t have = out.size();
    bool full = have >= expected;
    char probe;  // when full, a 1-byte buffer tells whether more output follows
    if (!full) out.resize(std::min(expected, have + kGrowStep));
    ZSTD_outBuffer o{full ? static_cast<void*>(&probe) : static_cast<void*>(&out[have]), full ? 1 : out.size() - have, 0};
    size_t before_in = in.pos;
    rc = ZSTD_decompressStream(ds, &o, &in);
    if (full) {
      too_much = !ZSTD_isError(rc) && o.pos > 0;
      break;
    }
    out.resize(have + o.pos);
    if (ZSTD_isError(rc) || (rc == 0 && in.pos == in.size)) break;
    if (o.pos == 0 && in.pos == before_in) break;  // no progress: truncated input
  }
  if (too_much) {
    ZSTD_freeDStream(ds);
    ctx.fail("ZSTD data gives more than the " + std::to_string(expected) + " bytes the page header says");
  }
  bool bad = ZSTD_isError(rc);
  std::string err = bad ? ZSTD_getErrorName(rc) : "";
  ZSTD_freeDStream(ds);
  if (bad) ctx.fail("ZSTD data is corrupt: " + err);
  if (rc != 0 || out.size() != expected || in.pos != in.size)
    ctx.fail("ZSTD data gives " + std::to_string(out.size()) + " bytes (frame " + (rc == 0 ? "complete" : "incomplete") +
             "), the page header says " + std::to_string(expected));
  return out;
}

// Reads little-endian bit-packed values, LSB first.
struct BitReader {
  const uint8_t* d;
  size_t n;      // bytes available
  size_t bit = 0;
  bool read(int width, uint64_t* v) {
    if (width == 0) {
      *v = 0;
      return true;
    }
    if (bit + static_cast<size_t>(width) > n * 8) return false;
    uint64_t out = 0;
    for (int got = 0; got < width;) {
      size_t byte = bit >> 3;
      int off = static_cast<int>(bit & 7);
      int take = std::min(8 - off, width - got);
      out |= uint64_t((d[byte] >> off) & ((1u << take) - 1)) << got;
      got += take;
      bit += take;
    }
    *v = out;
    return true;
  }
};

struct ByteCursor {
  const uint8_t* d;
  size_t n, pos = 0;
  const PageContext& ctx;
  uint64_t varint(const char* what) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= n) ctx.fail(std::string("truncated ") + what);
      uint8_t b = d[pos++];
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    ctx.fail(std::string("overlong varint in ") + what);
  }
  int64_t zigzag(const char* what) {
    uint64_t v = varint(what);
    return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
  }
};

// DELTA_BINARY_PACKED: `count` integers (or all the header announces when count is SIZE_MAX).
// Returns the bytes consumed.
size_t decode_delta(const uint8_t* d, size_t n, size_t count, std::vector<int64_t>& out, const PageContext& ctx) {
  ByteCursor c{d, n, 0, ctx};
  uint64_t block = c.varint("DELTA_BINARY_PACKED header"), minis = c.varint("DELTA_BINARY_PACKED header");
  uint64_t total = c.varint("DELTA_BINARY_PACKED header");
  int64_t first = c.zigzag("DELTA_BINARY_PACKED header");
  if (block == 0 || block % 128 || block > (1u << 20) || minis == 0 || block % minis || (block / minis) % 32)
    ctx.fail("DELTA_BINARY_PACKED block of " + std::to_string(block) + " values in " + std::to_string(minis) +
             " miniblocks is invalid");
  if (count == SIZE_MAX) count = static_cast<size_t>(total);
  if (total < count) ctx.fail("DELTA_BINARY_PACKED holds " + std::to_string(total) + " values, " + std::to_string(count) + " needed");
  if (count > n * 64 + 1) ctx.fail("DELTA_BINARY_PACKED value count " + std::to_string(count) + " is larger than the page");
  size_t per_mini = static_cast<size_t>(block / minis);
  out.reserve(out.size() + count);
  if (count == 0) return c.pos;
  uint64_t prev = static_cast<uint64_t>(first);
  out.push_back(first);
  size_t done = 1;
  while (done < total) {
    int64_t min_delta = c.zigzag("DELTA_BINARY_PACKED block");
    if (minis > n - c.pos) ctx.fail("truncated DELTA_BINARY_PACKED block");
    const uint8_t* widths = d + c.pos;
    c.pos += static_cast<size_t>(minis);
    for (uint64_t m = 0; m < minis && done < total; ++m) {
      int w = widths[m];
      if (w > 64) ctx.fail("DELTA_BINARY_PACKED bit width " + std::to_string(w));
      size_t bytes = per_mini * static_cast<size_t>(w) / 8;
      if (bytes > n - c.pos) ctx.fail("truncated DELTA_BINARY_PACKED miniblock");
      BitReader br{d + c.pos, bytes};
      for (size_t i = 0; i < per_mini && done < total; ++i, ++done) {
        uint64_t v = 0;
        br.read(w, &v);
        prev += static_cast<uint64_t>(min_delta) + v;
        if (done < count) out.push_back(static_cast<int64_t>(prev));
      }
      c.pos += bytes;
    }
  }
  return c.pos;
}

json plain_int(const LeafType& t, int64_t v) {
  switch (t.kind) {
    case ValueKind::UInt32: return json(static_cast<uint64_t>(static_cast<uint32_t>(v)));
    case ValueKind::UInt64: return json(static_cast<uint64_t>(v));
    case ValueKind::Int32: return json(static_cast<int64_t>(static_cast<int32_t>(v)));
    default: return json(v);
  }
}

json bytes_value(const LeafType& t, const uint8_t* p, size_t len) {
  if (t.kind == ValueKind::String) return json(std::string(reinterpret_cast<const char*>(p), len));
  return json::binary(std::vector<uint8_t>(p, p + len));
}

void need_bytes(size_t have, size_t want, const char* what, const PageContext& ctx) {
  if (want > have) ctx.fail(std::string(what) + " needs " + std::to_string(want) + " bytes, the page has " + std::to_string(have));
}

void decode_plain(const LeafType& t, const uint8_t* d, size_t n, size_t count, std::vector<json>& out, const PageContext& ctx) {
  switch (t.physical) {
    case kBoolean: {
      need_bytes(n, (count + 7) / 8, "PLAIN BOOLEAN", ctx);
      for (size_t i = 0; i < count; ++i) out.emplace_back(((d[i >> 3] >> (i & 7)) & 1) != 0);
      return;
    }
    case kInt32: case kFloat: {
      need_bytes(n, count * 4, t.physical == kInt32 ? "PLAIN INT32" : "PLAIN FLOAT", ctx);
      for (size_t i = 0; i < count; ++i) {
        if (t.physical == kInt32) {
          int32_t v;
          std::memcpy(&v, d + 4 * i, 4);
          out.push_back(plain_int(t, v));
        } else {
          float v;
          std::memcpy(&v, d + 4 * i, 4);
          out.emplace_back(static_cast<double>(v));
        }
      }
      return;
    }
    case kInt64: case kDouble: {
      need_bytes(n, count * 8, t.physical == kInt64 ? "PLAIN INT64" : "PLAIN DOUBLE", ctx);
      for (size_t i = 0; i < count; ++i) {
        if (t.physical == kInt64) {
          int64_t v;
          std::memcpy(&v, d + 8 * i, 8);
          out.push_back(plain_int(t, v));
        } else {
          double v;
          std::memcpy(&v, d + 8 * i, 8);
          out.emplace_back(v);
        }
      }
      return;
    }
    case kByteArray: {
      size_t pos = 0;
      for (size_t i = 0; i < count; ++i) {
        if (n - pos < 4) ctx.fail("PLAIN BYTE_ARRAY value " + std::to_string(i) + " of " + std::to_string(count) + " is truncated");
        uint32_t len;
        std::memcpy(&len, d + pos, 4);
        pos += 4;
        if (len > n - pos)
          ctx.fail("PLAIN BYTE_ARRAY value " + std::to_string(i) + " has length " + std::to_string(len) + " but only " +
                   std::to_string(n - pos) + " bytes remain");
        out.push_back(bytes_value(t, d + pos, len));
        pos += len;
      }
      return;
    }
    case kFixedLenByteArray: {
      size_t w = static_cast<size_t>(t.type_length);
      if (w && count > n / w) need_bytes(n, count * w, "PLAIN FIXED_LEN_BYTE_ARRAY", ctx);
      for (size_t i = 0; i < count; ++i) out.push_back(bytes_value(t, d + i * w, w));
      return;
    }
    default: ctx.fail(std::string("values of type ") + physical_type_name(t.physical) + " are not supported");
  }
}

void decode_byte_stream_split(const LeafType& t, const uint8_t* d, size_t n, size_t count, std::vector<json>& out,
                              const PageContext& ctx) {
  size_t w = t.physical == kInt32 || t.physical == kFloat ? 4 : t.physical == kInt64 || t.physical == kDouble ? 8
           : t.physical == kFixedLenByteArray ? static_cast<size_t>(t.type_length) : 0;
  if (w == 0) ctx.fail(std::string("BYTE_STREAM_SPLIT is not defined for ") + physical_type_name(t.physical));
  if (count > n / w) ctx.fail("BYTE_STREAM_SPLIT needs " + std::to_string(count) + " values of " + std::to_string(w) +
                              " bytes, the page has " + std::to_string(n));
  // Stream b holds byte b of every value: count bytes each.
  std::string joined(count * w, '\0');
  for (size_t i = 0; i < count; ++i)
    for (size_t b = 0; b < w; ++b) joined[i * w + b] = static_cast<char>(d[b * count + i]);
  decode_plain(t, reinterpret_cast<const uint8_t*>(joined.data()), joined.size(), count, out, ctx);
}

}  // namespace

std::string decompress(int codec, const uint8_t* src, size_t n, size_t expected, const PageContext& ctx) {
  if (n == 0 && expected == 0) return "";  // an empty values section (an all-null v2 page) may be left uncompressed
  switch (codec) {
    case kUncompressed:
      if (n != expected) ctx.fail("uncompressed page holds " + std::to_string(n) + " bytes, the header says " + std::to_string(expected));
      return std::string(reinterpret_cast<const char*>(src), n);
    case kSnappy: {
      size_t len = 0;
      if (snappy_uncompressed_length(reinterpret_cast<const char*>(src), n, &len) != SNAPPY_OK ||
          snappy_validate_compressed_buffer(reinterpret_cast<const char*>(src), n) != SNAPPY_OK)
        ctx.fail("SNAPPY data is corrupt");
      if (len != expected) ctx.fail("SNAPPY data holds " + std::to_string(len) + " bytes, the page header says " + std::to_string(expected));
      std::string out(len, '\0');
      if (snappy_uncompress(reinterpret_cast<const char*>(src), n, out.data(), &len) != SNAPPY_OK || len != expected)
        ctx.fail("SNAPPY data is corrupt");
      return out;
    }
    case kGzip: return inflate_gzip(src, n, expected, ctx);
    case kZstd: return inflate_zstd(src, n, expected, ctx);
    default: ctx.fail(std::string("compression ") + codec_name(codec) + " is not supported (UNCOMPRESSED, SNAPPY, GZIP, ZSTD are)");
  }
}

void decode_rle_hybrid(const uint8_t* d, size_t n, int bit_width, size_t count, std::vector<uint32_t>& out,
                       const PageContext& ctx) {
  if (bit_width < 0 || bit_width > 32) ctx.fail("RLE bit width " + std::to_string(bit_width) + " is out of range");
  ByteCursor c{d, n, 0, ctx};
  size_t width_bytes = (static_cast<size_t>(bit_width) + 7) / 8;
  size_t target = out.size() + count;
  out.reserve(target);
  while (out.size() < target) {
    uint64_t header = c.varint("RLE run header");
    if (header & 1) {  // bit-packed: (header >> 1) groups of 8 values
      uint64_t groups = header >> 1;
      if (groups > (n - c.pos) / std::max<size_t>(1, bit_width) + 1)
        ctx.fail("RLE bit-packed run of " + std::to_string(groups) + " groups runs past the end of the data");
      size_t bytes = static_cast<size_t>(groups) * static_cast<size_t>(bit_width);
      if (bytes > n - c.pos) {
        // Writers may end the last run early when the values stop: accept what is there.
        bytes = n - c.pos;
      }
      BitReader br{d + c.pos, bytes};
      size_t values = static_cast<size_t>(groups) * 8;
      for (size_t i = 0; i < values && out.size() < target; ++i) {
        uint64_t v;
        if (!br.read(bit_width, &v)) ctx.fail("RLE bit-packed run is truncated");
        out.push_back(static_cast<uint32_t>(v));
      }
      c.pos += bytes;
    } else {
      uint64_t run = header >> 1;
      if (width_bytes > n - c.pos) ctx.fail("RLE run value is truncated");
      uint32_t v = 0;
      for (size_t b = 0; b < width_bytes; ++b) v |= uint32_t(d[c.pos + b]) << (8 * b);
      c.pos += width_bytes;
      if (bit_width < 32 && (v >> bit_width)) ctx.fail("RLE run value " + std::to_string(v) + " exceeds the bit width " + std::to_string(bit_width));
      if (run == 0) ctx.fail("RLE run of length 0");
      size_t take = static_cast<size_t>(std::min<uint64_t>(run, target - out.size()));
      out.insert(out.end(), take, v);
    }
  }
}

void decode_values(int encoding, const LeafType& t, const uint8_t* d, size_t n, size_t count, std::vector<json>& out,
                   const PageContext& ctx) {
  switch (encoding) {
    case kPlain: decode_plain(t, d, n, count, out, ctx); return;
    case kRle: {
      if (t.physical != kBoolean) ctx.fail(std::string("RLE values are only defined for BOOLEAN, not ") + physical_type_name(t.physical));
      if (n < 4) ctx.fail("RLE BOOLEAN values lack their 4-byte length");
      uint32_t len;
      std::memcpy(&len, d, 4);
      if (len > n - 4) ctx.fail("RLE BOOLEAN length " + std::to_string(len) + " runs past the page (" + std::to_string(n - 4) + " bytes)");
      std::vector<uint32_t> bits;
      decode_rle_hybrid(d + 4, len, 1, count, bits, ctx);
      for (uint32_t b : bits) out.emplace_back(b != 0);
      return;
    }
    case kDeltaBinaryPacked: {
      if (t.physical != kInt32 && t.physical != kInt64)
        ctx.fail(std::string("DELTA_BINARY_PACKED is not defined for ") + physical_type_name(t.physical));
      std::vector<int64_t> v;
      decode_delta(d, n, count, v, ctx);
      for (int64_t x : v) out.push_back(plain_int(t, x));
      return;
    }
    case kDeltaLengthByteArray: case kDeltaByteArray: {
      if (t.physical != kByteArray && t.physical != kFixedLenByteArray)
        ctx.fail(std::string(encoding_name(encoding)) + " is not defined for " + physical_type_name(t.physical));
      std::vector<int64_t> prefix, lengths;
      size_t pos = 0;
      if (encoding == kDeltaByteArray) pos += decode_delta(d, n, count, prefix, ctx);
      pos += decode_delta(d + pos, n - pos, count, lengths, ctx);
      std::string prev;
      for (size_t i = 0; i < count; ++i) {
        int64_t len = lengths[i], pre = encoding == kDeltaByteArray ? prefix[i] : 0;
        if (len < 0 || static_cast<uint64_t>(len) > n - pos)
          ctx.fail(std::string(encoding_name(encoding)) + " value " + std::to_string(i) + " has length " + std::to_string(len) +
                   " but " + std::to_string(n - pos) + " bytes remain");
        if (pre < 0 || static_cast<uint64_t>(pre) > prev.size())
          ctx.fail("DELTA_BYTE_ARRAY value " + std::to_string(i) + " has prefix length " + std::to_string(pre) +
                   " but the previous value has " + std::to_string(prev.size()) + " bytes");
        std::string v = prev.substr(0, static_cast<size_t>(pre));
        v.append(reinterpret_cast<const char*>(d + pos), static_cast<size_t>(len));
        pos += static_cast<size_t>(len);
        out.push_back(bytes_value(t, reinterpret_cast<const uint8_t*>(v.data()), v.size()));
        prev = std::move(v);
      }
      return;
    }
    case kByteStreamSplit: decode_byte_stream_split(t, d, n, count, out, ctx); return;
    default: ctx.fail(std::string("value encoding ") + encoding_name(encoding) + " (" + std::to_string(encoding) + ") is not supported");
  }
}

}  // namespace mor::parquet
