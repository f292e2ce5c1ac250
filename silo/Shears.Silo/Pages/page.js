// The runs pages: the list polls the silo's JSON, a run's page follows its server-sent events; they draw tables and SVG
// charts, and nothing is loaded from elsewhere.
'use strict';

const pct = v => v == null ? '-' : (100 * v).toFixed(2) + '%';
const num = (v, d) => v == null || v === 'NaN' ? '-' : Number(v).toFixed(d);
const sig = v => v == null ? '-' : Number(v).toPrecision(6);

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

// A run's page data as server-sent events, rendered as each arrives; closed once the run has finished. An answer that is
// not an event stream (an unknown run) is shown from the JSON endpoint instead.
function follow(url, render) {
  const events = new EventSource(url + '/events');
  events.onmessage = e => {
    document.body.dataset.live = 'events';
    if (render(JSON.parse(e.data), true)) events.close();
  };
  events.onerror = () => {
    if (events.readyState === EventSource.CLOSED) poll(url, render);
  };
}

async function poll(url, render) {
  while (true) {
    let finished = false;
    try {
      const response = await fetch(url, { cache: 'no-store' });
      finished = render(await response.json(), response.ok);
    } catch (e) {
      console.error(e);
    }
    if (finished) return;
    await new Promise(r => setTimeout(r, 1000));
  }
}

function showRuns() {
  poll('/api/runs', runs => {
    const body = document.querySelector('#runs tbody');
    body.replaceChildren();
    for (const run of runs) {
      const row = body.insertRow();
      row.className = 'run';
      row.dataset.run = run.runId;
      const link = document.createElement('a');
      link.href = '/runs/' + encodeURIComponent(run.runId);
      link.textContent = run.runId;
      cell(row, '', 'text').append(link);
      const state = document.createElement('span');
      state.className = 'state ' + run.state;
      state.textContent = run.state;
      cell(row, '', 'text').append(state);
      cell(row, run.phase, 'text');
      cell(row, run.finishedRounds + '/' + run.totalRounds);
      cell(row, '', 'text').append(bar(run.totalRounds ? run.finishedRounds / run.totalRounds : 0));
      cell(row, pct(run.achievedSparsity));
      cell(row, pct(run.targetSparsity));
      cell(row, run.model || '', 'text');
      cell(row, run.startedAt ? new Date(run.startedAt).toLocaleString() : '', 'text');
    }
    document.getElementById('empty').hidden = runs.length > 0;
    return false;
  });
}

function bar(fraction) {
  const outer = document.createElement('span');
  outer.className = 'bar';
  const inner = document.createElement('span');
  inner.style.width = (100 * fraction).toFixed(1) + '%';
  outer.append(inner);
  return outer;
}

function showRun(id) {
  document.title = 'Shears run ' + id;
  document.getElementById('title').textContent = 'run ' + id;
  const report = document.getElementById('report');
  report.href = '/runs/' + encodeURIComponent(id) + '/report';
  follow('/api/runs/' + encodeURIComponent(id), (page, ok) => {
    if (!ok) {
      const error = document.getElementById('error');
      error.hidden = false;
      error.textContent = page.error;
      return false;
    }
    const s = page.status;
    document.body.dataset.state = s.state;
    document.body.dataset.rounds = s.rounds.length;
    const state = document.getElementById('state');
    state.className = 'state ' + s.state;
    state.textContent = s.state;
    document.getElementById('phase').textContent = s.phase;
    document.getElementById('round').textContent = s.rounds.length + '/' + s.totalRounds;
    document.getElementById('progress').style.width = (s.totalRounds ? 100 * s.rounds.length / s.totalRounds : 0).toFixed(1) + '%';
    const error = document.getElementById('error');
    error.hidden = !s.error;
    error.textContent = s.error || '';
    const spec = s.spec;
    document.getElementById('spec').textContent =
      `${spec.modelPath} → ${spec.outputPath} · ${spec.method}, ${spec.pattern}, ${spec.scope}, ${spec.schedule} to ${pct(spec.sparsity)} · ${s.prunableWeights.toLocaleString()} prunable weights on ${s.shards} shards`;
    report.hidden = !page.hasReport;
    const metric = s.baseline ? s.baseline.metric : (s.rounds.find(r => r.eval) || { eval: { metric: 'eval' } }).eval.metric;
    document.getElementById('eval-name').textContent = metric;
    document.getElementById('quality-title').textContent = metric.charAt(0).toUpperCase() + metric.slice(1) + ' by round';

    // Encoder evaluations also measure neighbour agreement at 10: a column and a series of their own where they do.
    const agreement = e => e && e.measures ? e.measures.neighbourAgreement10 : undefined;
    const withAgreement = agreement(s.baseline) != null || s.rounds.some(r => agreement(r.eval) != null);
    document.getElementById('agreement-name').hidden = !withAgreement;
    const body = document.querySelector('#rounds tbody');
    body.replaceChildren();
    if (s.baseline) {
      const row = body.insertRow();
      row.className = 'dense';
      const texts = ['dense', '-', '-', '-', '-', num(s.baseline.value, 4), '-', '-'];
      if (withAgreement) texts.splice(6, 0, num(agreement(s.baseline), 4));
      for (const text of texts) cell(row, text);
    }
    for (const r of s.rounds) {
      const row = body.insertRow();
      row.className = 'round';
      row.dataset.round = r.round;
      const texts = [r.round, pct(r.targetSparsity), pct(r.achievedSparsity), r.maskedWeights.toLocaleString(), sig(r.threshold),
        r.eval ? num(r.eval.value, 4) : '-', num(r.finetuneLoss, 4), num(r.seconds, 2)];
      if (withAgreement) texts.splice(6, 0, num(agreement(r.eval), 4));
      for (const text of texts) cell(row, String(text));
    }

    const total = Math.max(1, s.totalRounds);
    chart(document.getElementById('sparsity-chart'), total, [
      { name: 'target', color: '#8a94a6', dashed: true, points: s.rounds.map(r => [r.round, r.targetSparsity]) },
      { name: 'achieved', color: '#1f7fbf', points: s.rounds.map(r => [r.round, r.achievedSparsity]) },
    ], [0, 1], v => (100 * v).toFixed(0) + '%');
    const quality = [], agreements = [];
    if (s.baseline) quality.push([0, s.baseline.value]);
    if (agreement(s.baseline) != null) agreements.push([0, agreement(s.baseline)]);
    for (const r of s.rounds) {
      if (r.eval) quality.push([r.round, r.eval.value]);
      if (agreement(r.eval) != null) agreements.push([r.round, agreement(r.eval)]);
    }
    const qualitySeries = [{ name: metric, color: '#2e8b57', points: quality }];
    if (withAgreement) qualitySeries.push({ name: 'neighbours@10', color: '#7b4fa3', dashed: true, points: agreements });
    chart(document.getElementById('quality-chart'), total, qualitySeries);
    // The fine-tune loss has its own axis: it is not on the evaluation's scale.
    const losses = s.rounds.filter(r => r.finetuneLoss != null).map(r => [r.round, r.finetuneLoss]);
    document.getElementById('loss').hidden = !losses.length;
    if (losses.length)
      chart(document.getElementById('loss-chart'), total, [{ name: 'fine-tune loss', color: '#c0392b', points: losses }]);

    const silos = document.querySelector('#silos tbody');
    silos.replaceChildren();
    for (const silo of page.silos) {
      const row = silos.insertRow();
      row.className = 'silo';
      cell(row, silo.silo, 'text');
      cell(row, silo.shards);
      cell(row, silo.elements.toLocaleString());
      cell(row, silo.tensors.length + ' tensors', 'text');
    }
    return s.state !== 'running';
  });
}

// A line chart of series [{name, color, dashed, points: [[round, value]]}] over rounds 0..total, drawn as SVG. Without a
// fixed range and label format, the axis spans the data in round steps and labels them with the step's decimals.
function chart(svg, total, series, range, format) {
  const ns = 'http://www.w3.org/2000/svg';
  const width = svg.width.baseVal.value, height = svg.height.baseVal.value;
  const left = 52, right = 12, top = 30, bottom = 40;
  const values = series.flatMap(s => s.points.map(p => p[1])).filter(Number.isFinite);
  let [lo, hi] = range || [Math.min(...values), Math.max(...values)];
  if (!values.length && !range) [lo, hi] = [0, 1];
  if (hi - lo < 1e-12) { const pad = Math.abs(hi) > 1e-12 ? Math.abs(hi) / 10 : 0.5; lo -= pad; hi += pad; }
  let ticks = 4;
  if (!range) {
    // Round the data's range out to steps of 1, 2 or 5 times a power of ten, so the axis reads in round numbers.
    const raw = (hi - lo) / 4, power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map(m => m * power).find(t => t >= raw * (1 - 1e-9));
    lo = Math.floor(lo / step + 1e-9) * step;
    hi = Math.ceil(hi / step - 1e-9) * step;
    ticks = Math.round((hi - lo) / step);
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    format = v => v.toFixed(decimals);
  }
  const x = r => left + (width - left - right) * r / total;
  const y = v => top + (height - top - bottom) * (1 - (v - lo) / (hi - lo));
  svg.replaceChildren();
  const add = (name, attrs, text) => {
    const e = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    svg.append(e);
    return e;
  };
  for (let i = 0; i <= ticks; i++) {
    const v = lo + (hi - lo) * i / ticks;
    add('line', { x1: left, x2: width - right, y1: y(v), y2: y(v), stroke: '#eef1f5' });
    add('text', { x: left - 6, y: y(v) + 4, 'text-anchor': 'end' }, format(v));
  }
  const step = Math.max(1, Math.ceil(total / 10));
  for (let r = 0; r <= total; r += step) add('text', { x: x(r), y: height - bottom + 16, 'text-anchor': 'middle' }, r);
  add('text', { x: (left + width - right) / 2, y: height - 6, 'text-anchor': 'middle' }, 'round');
  add('line', { x1: left, x2: left, y1: top, y2: height - bottom, stroke: '#8a94a6' });
  add('line', { x1: left, x2: width - right, y1: height - bottom, y2: height - bottom, stroke: '#8a94a6' });
  series.forEach((s, i) => {
    const points = s.points.filter(p => Number.isFinite(p[1]));
    if (points.length) {
      add('polyline', { points: points.map(p => `${x(p[0])},${y(p[1])}`).join(' '), fill: 'none', stroke: s.color, 'stroke-width': 2,
        'stroke-dasharray': s.dashed ? '5 4' : 'none', class: 'series', 'data-name': s.name });
      for (const p of points) add('circle', { cx: x(p[0]), cy: y(p[1]), r: 3, fill: s.color, class: 'point' });
    }
    // The legend: a sample of the series' line, then its name.
    const at = left + 10 + i * 130;
    add('line', { x1: at, x2: at + 18, y1: 14, y2: 14, stroke: s.color, 'stroke-width': 2, 'stroke-dasharray': s.dashed ? '5 4' : 'none', class: 'legend' });
    add('text', { x: at + 24, y: 18 }, s.name);
  });
}
