// What the pages for signed-out visitors share (sign-in, sign-up, verify, forgot and reset password):
// the centred card and a form whose outcome replaces it with a message.
import { h, readForm } from '../ui.js';

/** The card: brand, title, then `content`, with the language switch above it. */
export function visitorCard({ languageSwitch, title, content }) {
  return h(
    'div',
    { class: 'login' },
    h('div', { class: 'login-top' }, languageSwitch),
    h(
      'main',
      { class: 'login-card' },
      h('p', { class: 'brand' }, 'polyrelay'),
      h('h1', { id: 'visitor-title' }, title),
      content,
    ),
  );
}

/**
 * A form of `fields` and a submit button. `submit(values)` returns the message that replaces the form
 * when it succeeded, or throws: `failed(error)` words the error (the server's message by default).
 */
export function visitorForm({ fields, submitLabel, submit, failed = (error) => error.message }) {
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const button = h('button', { type: 'submit', class: 'primary wide' }, submitLabel);
  const form = h('form', { class: 'form', 'aria-labelledby': 'visitor-title' }, fields, error, button);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    button.disabled = true;
    error.hidden = true;
    try {
      const done = await submit(readForm(form));
      form.replaceWith(h('div', { role: 'status' }, done));
    } catch (failure) {
      error.replaceChildren(...[failed(failure)].flat());
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

/** A paragraph (when `text` is not empty) and, under it, links as [href, text] pairs. */
export function note(text, ...links) {
  return h(
    'div',
    {},
    text ? h('p', {}, text) : null,
    links.length
      ? h(
          'p',
          { class: 'visitor-links' },
          links.map(([href, label]) => h('a', { href }, label)),
        )
      : null,
  );
}
