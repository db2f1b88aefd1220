/**
 * How the chat page renders an answer: Markdown through markdown-it with raw HTML off, so model
 * text can never inject markup, links only to absolute http(s) URLs, and no images (an image in
 * model text would make the browser fetch whatever URL the model wrote). The same function runs in
 * the page and in the end-to-end tests, which compare the page against the stored text rendered here.
 */
import MarkdownIt from 'markdown-it';

const SAFE_LINK = /^https?:\/\//i;

/** A markdown-it instance with the page's settings; see the module comment. */
export function createMarkdown(): MarkdownIt {
  const markdown = new MarkdownIt({ html: false, linkify: true, typographer: false, breaks: false });
  markdown.disable(['image']);
  // markdown-it's own check only refuses javascript:, vbscript:, file: and most data: URLs; the
  // page accepts nothing but absolute http(s) links, and what it refuses stays plain text.
  markdown.validateLink = (url) => SAFE_LINK.test(url.trim());

  const renderToken: RuleFunction = (tokens, index, options, _environment, self) => self.renderToken(tokens, index, options);
  markdown.renderer.rules.link_open = (tokens, index, options, environment, self) => {
    const token = tokens[index]!;
    token.attrSet('target', '_blank');
    token.attrSet('rel', 'noopener noreferrer nofollow');
    return renderToken(tokens, index, options, environment, self);
  };
  // Aligned table cells carry `style="text-align:…"`, which the page's Content-Security-Policy
  // refuses; a class says the same thing.
  const alignedCell: RuleFunction = (tokens, index, options, environment, self) => {
    const token = tokens[index]!;
    const style = token.attrGet('style');
    if (style !== null) {
      token.attrs = (token.attrs ?? []).filter(([name]) => name !== 'style');
      const alignment = /text-align:\s*(left|right|center)/.exec(style)?.[1];
      if (alignment) token.attrJoin('class', `align-${alignment}`);
    }
    return renderToken(tokens, index, options, environment, self);
  };
  markdown.renderer.rules.th_open = alignedCell;
  markdown.renderer.rules.td_open = alignedCell;
  return markdown;
}

type RuleFunction = NonNullable<MarkdownIt['renderer']['rules']['link_open']>;

let shared: MarkdownIt | undefined;

/** The HTML of `text` rendered as Markdown with the page's settings. */
export function renderMarkdown(text: string): string {
  shared ??= createMarkdown();
  return shared.render(text);
}
