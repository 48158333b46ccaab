// Time series with uPlot (canvas; chosen for dense series: docs/console.md says why).
// A line of averages inside a band from each bucket's min to its max; drag across the
// chart to zoom in, double-click to zoom out.

import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface ChartData {
  /** Unix seconds of each point. */
  x: number[];
  avg: (number | null)[];
  min?: (number | null)[];
  max?: (number | null)[];
}

function columnsOf(data: ChartData, banded: boolean): uPlot.AlignedData {
  return (banded ? [data.x, data.avg, data.min!, data.max!] : [data.x, data.avg]) as uPlot.AlignedData;
}

export function TimeChart(props: { title: string; data: ChartData; unit?: string; bars?: boolean; height?: number }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  // Set by a drag (zoom), cleared by a double-click: new data then keeps the zoom.
  const zoomed = useRef(false);
  const { data, title, bars } = props;
  const banded = !!(data.min && data.max);
  const height = props.height ?? 220;

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const series: uPlot.Series[] = [
      {},
      {
        label: bars ? "readings" : "avg",
        stroke: "#1f6feb",
        width: 1.5,
        fill: bars ? "rgba(31,111,235,0.35)" : undefined,
        paths: bars ? uPlot.paths.bars!({ size: [0.8, 40] }) : undefined,
        // uPlot's default: points only where the data is sparse (a lone reading shows).
      },
    ];
    if (banded) {
      series.push(
        { label: "min", stroke: "rgba(31,111,235,0.35)", width: 1, points: { show: false } },
        { label: "max", stroke: "rgba(31,111,235,0.35)", width: 1, points: { show: false } },
      );
    }
    const options: uPlot.Options = {
      title,
      width: Math.max(el.clientWidth, 300),
      height,
      series,
      bands: banded ? [{ series: [3, 2], fill: "rgba(31,111,235,0.12)" }] : undefined,
      scales: { x: { time: true } },
      axes: [{}, { label: props.unit }],
      cursor: { drag: { x: true, y: false } },
      hooks: { setSelect: [() => (zoomed.current = true)] },
    };
    zoomed.current = false;
    plot.current = new uPlot(options, columnsOf(data, banded), el);
    const unzoom = () => (zoomed.current = false);
    el.addEventListener("dblclick", unzoom);
    const resize = new ResizeObserver(() => {
      const w = Math.max(el.clientWidth, 300);
      if (plot.current && Math.abs(plot.current.width - w) > 2) plot.current.setSize({ width: w, height });
    });
    resize.observe(el);
    return () => {
      resize.disconnect();
      el.removeEventListener("dblclick", unzoom);
      plot.current?.destroy();
      plot.current = null;
    };
    // The chart is rebuilt only when its shape changes; new data goes to setData below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [title, bars, banded, props.unit, height]);

  useEffect(() => {
    plot.current?.setData(columnsOf(data, banded), !zoomed.current);
  }, [data, banded]);

  return <div class="chart" ref={box} data-chart={title} />;
}
