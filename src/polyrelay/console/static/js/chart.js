// Stacked bar charts in plain SVG: one bar per day, one coloured segment per model.
import { h } from './ui.js';

const NS = 'http://www.w3.org/2000/svg';
const COLOURS = 8; // .series-0 … .series-7 in app.css; further models are summed as one "other" series
const WIDTH = 560;
const HEIGHT = 220;
const PAD = { left: 70, right: 6, top: 10, bottom: 26 };

function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

/**
 * The series in the caller's order (so a model keeps its colour across charts); beyond the
 * palette, the rest are folded into one. Each keeps its colour index; empty ones are dropped.
 */
function fold(series, otherLabel) {
  let shown = series;
  if (series.length > COLOURS) {
    const rest = series.slice(COLOURS - 1);
    const other = {
      label: otherLabel,
      values: rest[0].values.map((_, day) => rest.reduce((a, s) => a + s.values[day], 0)),
    };
    shown = [...series.slice(0, COLOURS - 1), other];
  }
  return shown
    .map((s, colour) => ({ ...s, colour, total: s.values.reduce((a, b) => a + b, 0) }))
    .filter((s) => s.total > 0);
}

/** A round step (1, 2 or 5 × 10^n, at least 1) so four steps cover `max`. */
function tickStep(max) {
  const rough = max / 4;
  if (rough <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(rough));
  const fraction = rough / power;
  return (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * power;
}

/**
 * `days`: ["YYYY-MM-DD", ...]; `series`: [{label, values: [per day]}], colours in this order;
 * `format` renders a value. Values are integers (counts, micro-USD).
 */
export function stackedBars({ title, days, series, format, otherLabel, emptyLabel }) {
  const shown = fold(series, otherLabel);
  if (!shown.length) {
    return h('figure', { class: 'chart' }, h('figcaption', {}, title), h('p', { class: 'muted' }, emptyLabel));
  }
  const totals = days.map((_, day) => shown.reduce((sum, s) => sum + s.values[day], 0));
  const step = tickStep(Math.max(0, ...totals));
  const top = step * 4;
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const slot = plotWidth / Math.max(1, days.length);
  const barWidth = Math.max(2, slot * 0.72);
  const y = (value) => PAD.top + plotHeight - (value / top) * plotHeight;

  const chart = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: 'chart-svg',
    role: 'img',
    'aria-label': `${title}: ${format(totals.reduce((a, b) => a + b, 0))}`,
  });
  for (let tick = 0; tick <= 4; tick++) {
    const value = step * tick;
    chart.append(
      svg('line', { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(value), y2: y(value), class: 'grid' }),
      svg('text', { x: PAD.left - 6, y: y(value) + 4, class: 'axis', 'text-anchor': 'end' }, format(value)),
    );
  }
  const labelEvery = Math.ceil(days.length / 10);
  days.forEach((day, index) => {
    const x = PAD.left + index * slot + (slot - barWidth) / 2;
    let stacked = 0;
    shown.forEach((s) => {
      const value = s.values[index];
      if (value <= 0) return;
      chart.append(
        svg(
          'rect',
          {
            x,
            width: barWidth,
            y: y(stacked + value),
            height: y(stacked) - y(stacked + value),
            class: `bar series-${s.colour}`,
          },
          svg('title', {}, `${s.label} · ${day}: ${format(value)}`),
        ),
      );
      stacked += value;
    });
    if (index % labelEvery === 0) {
      chart.append(
        svg('text', { x: x + barWidth / 2, y: HEIGHT - 8, class: 'axis', 'text-anchor': 'middle' }, day.slice(5)),
      );
    }
  });

  const legend = h(
    'ul',
    { class: 'legend' },
    shown.map((s) =>
      h(
        'li',
        {},
        h('span', { class: `swatch series-${s.colour}`, 'aria-hidden': 'true' }),
        h('span', {}, s.label),
        h('span', { class: 'muted' }, format(s.total)),
      ),
    ),
  );
  return h('figure', { class: 'chart' }, h('figcaption', {}, title), chart, legend);
}
