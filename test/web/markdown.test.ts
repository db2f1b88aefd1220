/**
 * The page's Markdown renderer: model text is shown as formatted text and can never become markup,
 * a script, an image fetch or a link to anything but http(s).
 */
import { describe, expect, it } from 'vitest';
import { renderMarkdown } from '../../web/markdown.js';

describe('renderMarkdown', () => {
  it('renders Markdown', () => {
    expect(renderMarkdown('**bold** and `code`\n\n- one\n- two')).toBe(
      '<p><strong>bold</strong> and <code>code</code></p>\n<ul>\n<li>one</li>\n<li>two</li>\n</ul>\n',
    );
  });

  it('escapes HTML in model text instead of parsing it', () => {
    const html = renderMarkdown('<script>alert(1)</script>\n\n<img src=x onerror="alert(1)"> <b>x</b>');
    expect(html).not.toMatch(/<script|<img|<b>/);
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(html).toContain('&lt;img src=x onerror=&quot;alert(1)&quot;&gt;');
  });

  it('links only to absolute http(s) URLs, in a new tab without opener or referrer', () => {
    expect(renderMarkdown('[site](https://example.com/a?b=1)')).toBe(
      '<p><a href="https://example.com/a?b=1" target="_blank" rel="noopener noreferrer nofollow">site</a></p>\n',
    );
    for (const target of ['javascript:alert(1)', 'JAVASCRIPT:alert(1)', 'data:text/html,<script>alert(1)</script>', 'vbscript:x', 'file:///etc/passwd', '/graphql', '//evil.example/x', 'mailto:a@b.c']) {
      expect(renderMarkdown(`[x](${target})`), target).not.toContain('<a');
      expect(renderMarkdown(`<${target}>`), target).not.toContain('<a');
    }
    expect(renderMarkdown('see https://example.com/x.')).toContain('<a href="https://example.com/x"');
  });

  it('shows no images: a picture in model text would make the browser fetch any URL', () => {
    const html = renderMarkdown('![tracker](https://evil.example/pixel.png)');
    expect(html).not.toContain('<img');
  });

  it('aligns table cells with classes, since the page allows no inline style', () => {
    const html = renderMarkdown('| a | b |\n|:-:|--:|\n| 1 | 2 |');
    expect(html).not.toContain('style=');
    expect(html).toContain('<th class="align-center">a</th>');
    expect(html).toContain('<td class="align-right">2</td>');
  });
});
