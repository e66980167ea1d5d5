// English and Simplified Chinese. Only the chosen language's dictionary is loaded; an explicit
// choice is kept in localStorage, otherwise the browser's language decides.
export const LANGUAGES = { en: 'English', 'zh-CN': '中文' };
const STORED = 'polyrelay.language';

let dictionary = {};
export let language = 'en';

export function initialLanguage() {
  const stored = localStorage.getItem(STORED);
  if (stored in LANGUAGES) return stored;
  return (navigator.language || '').toLowerCase().startsWith('zh') ? 'zh-CN' : 'en';
}

export async function loadLanguage(wanted, { remember = false } = {}) {
  const chosen = wanted in LANGUAGES ? wanted : 'en';
  dictionary = (await import(`./lang/${chosen}.js`)).default;
  language = chosen;
  document.documentElement.lang = chosen;
  if (remember) localStorage.setItem(STORED, chosen);
}

/** The text of `key`, with `{name}` placeholders filled from `values`. */
export function t(key, values = {}) {
  const text = dictionary[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
}
