#pragma once
/// \file The T5 SentencePiece tokenizer (as PixArt-α and OpenSora feed their T5 encoder) and the
/// DeepFloyd-IF caption cleaning both pipelines apply to prompts. Reference: models.md §6.4, §2.3, §3.5.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

namespace ditcache {

/// T5 max_length of PixArt-α prompts.
constexpr int64_t kPixArtMaxTextLength = 120;
/// T5 max_length of OpenSora 1.2 prompts.
constexpr int64_t kOpenSoraMaxTextLength = 300;

/// Token ids and attention mask of a batch of prompts, both [B, max_length] int64.
struct TokenizedText {
  at::Tensor input_ids;       ///< ids, EOS after the text, pad id after that
  at::Tensor attention_mask;  ///< 1 for text tokens and the EOS, 0 for padding
};

/// The T5 tokenizer over a SentencePiece `spiece.model`: ids of the pieces, EOS appended,
/// truncated to max_length (the EOS stays the last token), right-padded with the pad id; as HF
/// `T5Tokenizer(Fast)(text, max_length=..., padding="max_length", truncation=True)` for ordinary
/// prompts. Not supported: HF's added special tokens in the text (`<extra_id_0>` is tokenized as
/// plain text here). Needs a build with SentencePiece (Debian libsentencepiece-dev).
class T5Tokenizer {
 public:
  /// Whether this build has SentencePiece (DITCACHE_WITH_SENTENCEPIECE).
  static bool available() noexcept;

  /// Loads `spiece.model` (or a folder holding one). Throws Error(kUnsupported) in a build without
  /// SentencePiece (saying how to get it), Error(kNotFound) for a missing file, Error(kFormat) for
  /// a file SentencePiece cannot load or one without an EOS piece.
  explicit T5Tokenizer(const std::string& spiece_model_path);
  ~T5Tokenizer();
  T5Tokenizer(T5Tokenizer&&) noexcept;
  T5Tokenizer& operator=(T5Tokenizer&&) noexcept;

  /// Piece ids of `text`, no EOS, no truncation.
  std::vector<int64_t> encode(const std::string& text) const;
  /// One prompt -> ids [max_length] with EOS, truncation and padding (see the class comment);
  /// `mask` (if given) receives the attention mask. max_length >= 1 (Error(kInvalidArgument)).
  std::vector<int64_t> encode_padded(const std::string& text, int64_t max_length,
                                     std::vector<int64_t>* mask = nullptr) const;
  /// A batch of prompts -> [B, max_length] ids and mask (int64, CPU).
  TokenizedText operator()(const std::vector<std::string>& texts, int64_t max_length) const;

  /// Pieces in the SentencePiece model (without HF's 100 added <extra_id_*> tokens).
  int64_t vocab_size() const;
  int64_t pad_id() const;  ///< 0 for T5
  int64_t eos_id() const;  ///< 1 for T5

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// One pass of the caption cleaning of DeepFloyd-IF / diffusers `PixArtAlphaPipeline._clean_caption`
/// (models.md §6.4), UTF-8 in and out: URL-unquote (+ as space), strip and lowercase,
/// `<person>` -> person, URLs removed, HTML tags stripped and entities decoded, @nicknames and CJK
/// removed, dashes and quotes unified, IPs / #ids / long numbers / file names removed, bad
/// punctuation to spaces, many '-'/'_' to spaces, spam patterns and NxM sizes removed, spacing
/// after ",./" and whitespace collapsed, wrapping quotes and edge punctuation stripped.
/// Differences from the reference: `ftfy.fix_text` is reduced to what it does to well-formed text
/// (straight quotes, ligatures, full-width ASCII, control characters; no mojibake repair), and
/// HTML entities are decoded for the common named ones and all numeric ones only.
std::string clean_caption(const std::string& caption);

/// The pipelines' prompt preprocessing: clean_caption applied twice (`clean` true), otherwise the
/// reference's fallback `lower().strip()`.
std::string preprocess_caption(const std::string& caption, bool clean = true);

}  // namespace ditcache
