/**
 * The general HF `tokenizers` encode and decode path, for `tokenizer.json` files whose pipeline is
 * not Lathe's own byte-level one: normalizer and added tokens (in the splitter), pre-tokenizer,
 * BPE model, post-processor, and decoder.
 */
import type { BpeModel } from './bpe.js';
import { readDecoder, type DecodeChain } from './decoders.js';
import type { HfComponents } from './hf-json.js';
import { readNormalizer, type Normalize } from './normalizers.js';
import { readPostProcessor, type Wrap } from './post-processors.js';
import { readPreTokenizer, type PreTokenize, type Word } from './pre-tokenizers.js';
import { bytesToByteLevel } from './bytes.js';

/** A compiled `tokenizer.json` pipeline. */
export class HfPipeline {
  /** The normalizer, or null. */
  readonly normalize: Normalize | null;
  /** What the post-processor puts around a single sequence's ids. */
  readonly wrap: Wrap;
  /** The decoder, or null (HF then joins the tokens with spaces). */
  readonly decodeChain: DecodeChain | null;
  /** Whether the decoder is exactly ByteLevel, which the byte-table decode reproduces. */
  readonly byteLevelDecoder: boolean;
  private readonly preTokenize: PreTokenize | null;

  constructor(
    components: HfComponents,
    private readonly model: BpeModel,
  ) {
    const c = components;
    this.normalize = c.normalizer ? readNormalizer(c.normalizer, 'normalizer') : null;
    this.preTokenize = c.pre_tokenizer ? readPreTokenizer(c.pre_tokenizer, 'pre_tokenizer') : null;
    this.decodeChain = c.decoder ? readDecoder(c.decoder, 'decoder') : null;
    this.byteLevelDecoder = c.decoder?.['type'] === 'ByteLevel';
    this.wrap = c.post_processor ? readPostProcessor(c.post_processor, 'post_processor') : { before: [], after: [] };
  }

  /** Appends the ids of one normalized text piece (between added tokens). */
  encodePiece(text: string, first: boolean, out: number[]): void {
    if (text.length === 0) return;
    const start: Word[] = [{ text, byteLevel: false, first }];
    const words = this.preTokenize === null ? start : this.preTokenize(start);
    for (const w of words) {
      if (!w.byteLevel) this.model.encodeChars(w.text, out);
      else if (this.model.bytesExact) this.model.encodeBytes(w.text, out);
      else this.model.encodeChars(bytesToByteLevel(Buffer.from(w.text, 'utf8')), out);
    }
  }

  /** Text of token strings through the decoder (HF `Tokenizer::decode` after the id lookup). */
  decodeTokens(tokens: string[]): string {
    if (this.decodeChain === null) return tokens.join(' ');
    return this.decodeChain(tokens).join('');
  }
}
