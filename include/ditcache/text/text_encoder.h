#pragma once
/// \file Prompts to T5 caption embeddings, as PixArt-α and OpenSora condition on them: tokenised to
/// a fixed length (EOS, padding, mask) and encoded by the native T5 encoder.

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include "ditcache/models/t5.h"
#include "ditcache/text/tokenizer.h"

namespace ditcache {

/// Caption embeddings of a batch of prompts.
struct TextEmbeddings {
  at::Tensor y;     ///< [n, max_length, d_model] float32, on the encoder's device
  at::Tensor mask;  ///< [n, max_length] int64 (1 = text token or EOS), on the encoder's device
};

/// Tokenises `captions` (already preprocessed, see preprocess_caption) to `max_length` tokens and
/// encodes them with `encoder` (in its own dtype; the result is float32). Throws
/// Error(kInvalidArgument) for an empty batch.
TextEmbeddings encode_captions(T5Encoder& encoder, const T5Tokenizer& tokenizer, const std::vector<std::string>& captions,
                               int64_t max_length);

}  // namespace ditcache
