// Prompts to T5 caption embeddings.
#include "ditcache/text/text_encoder.h"

#include <ATen/ATen.h>

#include "ditcache/error.h"

namespace ditcache {

TextEmbeddings encode_captions(T5Encoder& encoder, const T5Tokenizer& tokenizer, const std::vector<std::string>& captions,
                               int64_t max_length) {
  if (captions.empty()) throw Error(ErrorCode::kInvalidArgument, "encode_captions: no captions");
  const auto tokens = tokenizer(captions, max_length);
  const auto device = encoder->shared->weight.device();
  at::NoGradGuard no_grad;
  TextEmbeddings out;
  out.mask = tokens.attention_mask.to(device);
  out.y = encoder->encode(tokens.input_ids.to(device), out.mask).to(at::kFloat);
  return out;
}

}  // namespace ditcache
