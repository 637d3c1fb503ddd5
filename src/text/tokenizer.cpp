// T5Tokenizer over the SentencePiece C++ library (models.md §6.4); a stub that refuses to
// construct in builds without it.
#include "ditcache/text/tokenizer.h"

#include <algorithm>
#include <filesystem>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ditcache/error.h"

#ifdef DITCACHE_WITH_SENTENCEPIECE
#include <sentencepiece_processor.h>
#endif

namespace ditcache {

struct T5Tokenizer::Impl {
#ifdef DITCACHE_WITH_SENTENCEPIECE
  sentencepiece::SentencePieceProcessor sp;
#endif
  int64_t pad = 0, eos = 1;
};

bool T5Tokenizer::available() noexcept {
#ifdef DITCACHE_WITH_SENTENCEPIECE
  return true;
#else
  return false;
#endif
}

T5Tokenizer::T5Tokenizer(const std::string& spiece_model_path) {
#ifndef DITCACHE_WITH_SENTENCEPIECE
  throw Error(ErrorCode::kUnsupported,
              fmt::format("T5Tokenizer({}): this build of ditcache has no SentencePiece; install libsentencepiece-dev "
                          "(scripts/setup.sh does) and reconfigure, or tokenize in Python and pass input_ids",
                          spiece_model_path));
#else
  namespace fs = std::filesystem;
  std::string path = spiece_model_path;
  if (fs::is_directory(path)) path = (fs::path(path) / "spiece.model").string();
  if (!fs::exists(path)) throw Error(ErrorCode::kNotFound, fmt::format("{}: SentencePiece model not found", path));
  impl_ = std::make_unique<Impl>();
  const auto status = impl_->sp.Load(path);
  if (!status.ok()) {
    throw Error(ErrorCode::kFormat, fmt::format("{}: not a SentencePiece model ({})", path, status.ToString()));
  }
  impl_->eos = impl_->sp.eos_id();
  if (impl_->eos < 0) throw Error(ErrorCode::kFormat, fmt::format("{}: the SentencePiece model has no EOS piece", path));
  // T5's models define pad as id 0; a model without a pad piece still pads with 0, as HF does.
  impl_->pad = impl_->sp.pad_id() >= 0 ? impl_->sp.pad_id() : 0;
#endif
}

T5Tokenizer::~T5Tokenizer() = default;
T5Tokenizer::T5Tokenizer(T5Tokenizer&&) noexcept = default;
T5Tokenizer& T5Tokenizer::operator=(T5Tokenizer&&) noexcept = default;

std::vector<int64_t> T5Tokenizer::encode(const std::string& text) const {
#ifdef DITCACHE_WITH_SENTENCEPIECE
  std::vector<int> ids;
  const auto status = impl_->sp.Encode(text, &ids);
  if (!status.ok()) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("T5Tokenizer: cannot encode text ({})", status.ToString()));
  }
  return std::vector<int64_t>(ids.begin(), ids.end());
#else
  (void)text;
  throw Error(ErrorCode::kUnsupported, "T5Tokenizer: this build of ditcache has no SentencePiece");
#endif
}

std::vector<int64_t> T5Tokenizer::encode_padded(const std::string& text, int64_t max_length,
                                                std::vector<int64_t>* mask) const {
  if (max_length < 1) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("T5Tokenizer: max_length must be >= 1, got {}", max_length));
  }
  auto ids = encode(text);
  // Truncate the text so the EOS always fits as the last real token.
  if (static_cast<int64_t>(ids.size()) > max_length - 1) ids.resize(static_cast<size_t>(max_length - 1));
  ids.push_back(impl_->eos);
  const size_t real = ids.size();
  ids.resize(static_cast<size_t>(max_length), impl_->pad);
  if (mask) {
    mask->assign(static_cast<size_t>(max_length), 0);
    std::fill(mask->begin(), mask->begin() + static_cast<std::ptrdiff_t>(real), 1);
  }
  return ids;
}

TokenizedText T5Tokenizer::operator()(const std::vector<std::string>& texts, int64_t max_length) const {
  const int64_t B = static_cast<int64_t>(texts.size());
  TokenizedText out{at::zeros({B, max_length}, at::kLong), at::zeros({B, max_length}, at::kLong)};
  std::vector<int64_t> mask;
  for (int64_t b = 0; b < B; ++b) {
    auto ids = encode_padded(texts[static_cast<size_t>(b)], max_length, &mask);
    std::copy(ids.begin(), ids.end(), out.input_ids[b].data_ptr<int64_t>());
    std::copy(mask.begin(), mask.end(), out.attention_mask[b].data_ptr<int64_t>());
  }
  return out;
}

int64_t T5Tokenizer::vocab_size() const {
#ifdef DITCACHE_WITH_SENTENCEPIECE
  return impl_->sp.GetPieceSize();
#else
  return 0;
#endif
}

int64_t T5Tokenizer::pad_id() const { return impl_->pad; }
int64_t T5Tokenizer::eos_id() const { return impl_->eos; }

}  // namespace ditcache
