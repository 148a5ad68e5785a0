//! An invoice as a document a person files: HTML to read in a browser (and print) and a
//! PDF (A4, the base-14 Helvetica every reader has, so nothing is embedded), both made
//! from the same [`Invoice`] the API returns as JSON.

use highrise_api::{Invoice, InvoiceLine};
use maud::{html, Markup, DOCTYPE};
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};

/// Who is billed: the org's name and id.
pub struct Billed<'a> {
    pub name: &'a str,
    pub id: &'a str,
}

fn utc(t: i64) -> String {
    jiff::Timestamp::from_second(t).map_or_else(|_| t.to_string(), |ts| ts.strftime("%Y-%m-%d %H:%M UTC").to_string())
}

/// A line's quantity as people read it (`highrise_billing::meter::readable`).
pub(crate) fn quantity(l: &InvoiceLine) -> String {
    highrise_billing::meter::readable(&l.dimension, l.quantity)
}

/// A line's unit price as people read it, e.g. `0.16 / h`.
pub(crate) fn unit(l: &InvoiceLine) -> String {
    highrise_billing::meter::readable_price(&l.dimension, &l.unit_price, l.per)
}

/// What a line is: the plan and market of an instance's time, disk, traffic; a line
/// carried from an earlier month says so.
pub(crate) fn what(l: &InvoiceLine) -> String {
    let item = match l.dimension.split(':').collect::<Vec<_>>()[..] {
        ["instance_ms", plan, market] => format!("{plan} instance, {}", market.replace('_', "-")),
        ["disk_mib_ms"] => "disk (data and WAL)".to_string(),
        ["object_storage_mib_ms"] => "object storage (WAL and backups, every copy)".to_string(),
        ["proxy_bytes_in"] => "traffic in (from clients)".to_string(),
        ["proxy_bytes_out"] => "traffic out (to clients)".to_string(),
        _ => l.dimension.clone(),
    };
    if !l.carried {
        return item;
    }
    let month = jiff::Timestamp::from_second(l.first_hour)
        .map(|t| t.strftime("%Y-%m").to_string())
        .unwrap_or_default();
    format!("{item} (late, {month})")
}

fn status(inv: &Invoice) -> String {
    match (inv.status.as_str(), &inv.number) {
        ("draft", _) => "Draft: the bill so far".into(),
        (_, Some(n)) => format!("Issued, {n}"),
        _ => "Closed: to be issued".into(),
    }
}

/// The invoice's closing rows: the total, what credits and the commitment drew down, and
/// what is due (and where it is charged).
fn settlement(inv: &Invoice) -> Vec<(String, String)> {
    let mut rows = vec![(format!("Total ({})", inv.currency), inv.total.clone())];
    if inv.credits_applied != "0.00" {
        rows.push(("Credits".into(), format!("-{}", inv.credits_applied)));
    }
    if inv.commitment_applied != "0.00" {
        rows.push(("Prepaid commitment".into(), format!("-{}", inv.commitment_applied)));
    }
    let due = match inv.marketplace.as_deref() {
        Some(m) => format!("Amount due, charged through the {} marketplace", m.to_uppercase()),
        None => "Amount due".into(),
    };
    rows.push((due, inv.due.clone()));
    rows
}

const CSS: &str = "body{font:14px/1.45 system-ui,sans-serif;color:#1d2330;max-width:960px;margin:2rem auto;padding:0 1rem}\
h1{font-size:1.6rem;margin:0}header{display:flex;justify-content:space-between;align-items:flex-start;border-bottom:2px solid #1d2330;padding-bottom:1rem}\
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem;margin:1rem 0}dt{color:#5b6475}dd{margin:0}\
table{width:100%;border-collapse:collapse;margin-top:1rem}th,td{padding:.4rem .5rem;border-bottom:1px solid #dde1e8;text-align:left}\
th{font-size:.8rem;text-transform:uppercase;color:#5b6475}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
tfoot td{font-weight:700;border-bottom:none;border-top:2px solid #1d2330}.status{padding:.2rem .6rem;border-radius:1rem;background:#eef1f6}\
@media print{body{margin:0}.status{border:1px solid #999}}";

/// The invoice as an HTML page.
pub fn html(inv: &Invoice, billed: &Billed) -> String {
    let page: Markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Highrise invoice " (inv.month) " — " (billed.name) }
                style { (maud::PreEscaped(CSS)) }
            }
            body {
                header {
                    div { h1 { "Highrise" } div { "Invoice " (inv.month) @if let Some(n) = &inv.number { " · " (n) } } }
                    span class="status" { (status(inv)) }
                }
                dl {
                    dt { "Billed to" } dd { (billed.name) " (" (billed.id) ")" }
                    dt { "Period" } dd { (utc(inv.period_start)) " to " (utc(inv.period_end)) }
                    dt { "Prices" } dd { "list prices of " (inv.price_book) }
                    dt { "Currency" } dd { (inv.currency) }
                }
                @if inv.lines.is_empty() {
                    p { "No usage this month." }
                } @else {
                    table {
                        thead { tr {
                            th { "Cluster" } th { "Item" } th { "Where" }
                            th class="n" { "Quantity" } th class="n" { "Unit price" } th class="n" { "Amount" }
                        } }
                        tbody {
                            @for l in &inv.lines {
                                tr {
                                    td { (l.cluster) } td { (what(l)) } td { (l.cloud) "/" (l.region) }
                                    td class="n" { (quantity(l)) } td class="n" { (unit(l)) } td class="n" { (l.amount) }
                                }
                            }
                        }
                        tfoot { @for (label, amount) in settlement(inv) {
                            tr { td colspan="5" { (label) } td class="n" { (amount) } }
                        } }
                    }
                }
            }
        }
    };
    page.into_string()
}

/// Text the base-14 fonts can show (WinAnsi's ASCII part): anything else becomes `?`.
fn ascii(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c as u8
            } else {
                b'?'
            }
        })
        .collect()
}

/// The width of `s` in Helvetica at `size` (the AFM widths of what invoices print; other
/// characters are taken as wide as a digit).
fn width(s: &str, size: f32) -> f32 {
    let units: u32 = s
        .chars()
        .map(|c| match c {
            '.' | ',' | ':' | ' ' | '/' => 278,
            '-' => 333,
            'i' | 'l' => 222,
            _ => 556,
        })
        .sum();
    units as f32 * size / 1000.0
}

const A4: (f32, f32) = (595.0, 842.0);

/// One run of text at `(x, y)` (points from the bottom left).
fn text(c: &mut Content, font: &[u8], size: f32, x: f32, y: f32, s: &str) {
    c.begin_text();
    c.set_font(Name(font), size);
    c.next_line(x, y);
    c.show(Str(&ascii(s)));
    c.end_text();
}
const ROWS_PER_PAGE: usize = 34;

/// The invoice as a PDF: a header on every page, the lines in pages of
/// [`ROWS_PER_PAGE`], the total after the last.
pub fn pdf(inv: &Invoice, billed: &Billed) -> Vec<u8> {
    let pages: Vec<&[InvoiceLine]> = if inv.lines.is_empty() {
        vec![&[]]
    } else {
        inv.lines.chunks(ROWS_PER_PAGE).collect()
    };
    let (catalog, tree, regular, bold) = (Ref::new(1), Ref::new(2), Ref::new(3), Ref::new(4));
    let page_ref = |i: usize| Ref::new(5 + 2 * i as i32);
    let content_ref = |i: usize| Ref::new(6 + 2 * i as i32);
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids((0..pages.len()).map(page_ref))
        .count(pages.len() as i32);
    pdf.type1_font(regular).base_font(Name(b"Helvetica"));
    pdf.type1_font(bold).base_font(Name(b"Helvetica-Bold"));
    let mut info = pdf.document_info(Ref::new(5 + 2 * pages.len() as i32));
    info.title(pdf_writer::TextStr(&format!(
        "Highrise invoice {} - {}",
        inv.month, billed.name
    )));
    info.producer(pdf_writer::TextStr("Highrise"));
    info.finish();

    let columns: [(f32, bool); 6] = [
        (50.0, false),
        (150.0, false),
        (285.0, false),
        (410.0, true),
        (480.0, true),
        (545.0, true),
    ];
    for (n, lines) in pages.iter().enumerate() {
        let mut page = pdf.page(page_ref(n));
        page.media_box(Rect::new(0.0, 0.0, A4.0, A4.1));
        page.parent(tree);
        page.contents(content_ref(n));
        page.resources()
            .fonts()
            .pair(Name(b"F1"), regular)
            .pair(Name(b"F2"), bold);
        page.finish();

        let mut c = Content::new();
        let row = |c: &mut Content, font: &[u8], y: f32, cells: [&str; 6]| {
            for ((x, right), cell) in columns.iter().zip(cells) {
                let x = if *right { x - width(cell, 9.0) } else { *x };
                text(c, font, 9.0, x, y, cell);
            }
        };
        text(&mut c, b"F2", 20.0, 50.0, 780.0, "Highrise");
        text(
            &mut c,
            b"F1",
            12.0,
            50.0,
            760.0,
            &format!("Invoice {}  -  {}", inv.month, status(inv)),
        );
        text(
            &mut c,
            b"F1",
            10.0,
            50.0,
            735.0,
            &format!("Billed to: {} ({})", billed.name, billed.id),
        );
        text(
            &mut c,
            b"F1",
            10.0,
            50.0,
            721.0,
            &format!("Period: {} to {}", utc(inv.period_start), utc(inv.period_end)),
        );
        text(
            &mut c,
            b"F1",
            10.0,
            50.0,
            707.0,
            &format!("List prices of {}; amounts in {}", inv.price_book, inv.currency),
        );
        let mut y = 675.0;
        row(
            &mut c,
            b"F2",
            y,
            ["Cluster", "Item", "Where", "Quantity", "Unit price", "Amount"],
        );
        c.set_line_width(0.5);
        c.move_to(50.0, y - 4.0);
        c.line_to(545.0, y - 4.0);
        c.stroke();
        for l in lines.iter() {
            y -= 15.0;
            let place = format!("{}/{}", l.cloud, l.region);
            row(
                &mut c,
                b"F1",
                y,
                [&l.cluster, &what(l), &place, &quantity(l), &unit(l), &l.amount],
            );
        }
        if inv.lines.is_empty() {
            y -= 15.0;
            text(&mut c, b"F1", 9.0, 50.0, y, "No usage this month.");
        }
        if n + 1 == pages.len() {
            y -= 10.0;
            c.set_line_width(1.0);
            c.move_to(50.0, y);
            c.line_to(545.0, y);
            c.stroke();
            for (label, amount) in settlement(inv) {
                y -= 15.0;
                let amount = format!("{amount} {}", inv.currency);
                text(&mut c, b"F2", 10.0, 50.0, y, &label);
                text(&mut c, b"F2", 10.0, 545.0 - width(&amount, 10.0) * 1.05, y, &amount);
            }
        }
        let footer = format!("Page {} of {}", n + 1, pages.len());
        text(&mut c, b"F1", 8.0, 545.0 - width(&footer, 8.0), 40.0, &footer);
        pdf.stream(content_ref(n), &c.finish());
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invoice(lines: usize) -> Invoice {
        Invoice {
            month: "2026-11".into(),
            status: "issued".into(),
            number: Some("HR-000007".into()),
            issued_at: Some(1_796_104_800),
            period_start: 1_793_491_200,
            period_end: 1_796_083_200,
            currency: "USD".into(),
            price_book: "2026-11-01".into(),
            lines: (0..lines)
                .map(|i| InvoiceLine {
                    carried: i == 1,
                    cluster_id: format!("c{i}"),
                    cluster: if i == 0 {
                        "<script>ü</script>".into()
                    } else {
                        format!("shop-{i}")
                    },
                    dimension: ["instance_ms:small:spot", "instance_ms:large:on_demand"][i % 2].into(),
                    cloud: "local-a".into(),
                    region: "region-1".into(),
                    first_hour: 1_793_491_200,
                    last_hour: 1_796_079_600,
                    quantity: 2_592_000_000 + i as u64 * 1_234_567,
                    unit_price: "0.16".into(),
                    per: 3_600_000,
                    amount: format!("{}.{:02}", 115 + i, i % 100),
                })
                .collect(),
            total: "12345.67".into(),
            credits_applied: "100.00".into(),
            commitment_applied: "12000.00".into(),
            due: "245.67".into(),
            marketplace: None,
        }
    }

    const BILLED: Billed = Billed {
        name: "acme",
        id: "org_1",
    };

    #[test]
    fn the_html_escapes_what_tenants_name() {
        let page = html(&invoice(3), &BILLED);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("&lt;script&gt;") && !page.contains("<script>"));
        assert!(page.contains("720:00:00") && page.contains("0.16 / h") && page.contains("12345.67"));
        assert!(page.contains("HR-000007") && page.contains("(late, 2026-11)"));
        assert!(page.contains("-12000.00") && page.contains("Amount due") && page.contains("245.67"));
        assert!(html(&invoice(0), &BILLED).contains("No usage this month."));
    }

    #[test]
    fn the_pdf_has_a_page_per_block_of_lines_and_ascii_text() {
        let one = pdf(&invoice(1), &BILLED);
        assert!(one.starts_with(b"%PDF-") && one.ends_with(b"%%EOF"));
        let count = |b: &[u8]| b.windows(11).filter(|w| *w == b"/Type /Page").count();
        let many = pdf(&invoice(ROWS_PER_PAGE * 2 + 1), &BILLED);
        // `/Type /Page` names each page (and the tree, `/Type /Pages`): two more pages.
        assert_eq!(count(&many) - count(&one), 2);
        assert_eq!(ascii("aü("), b"a?(");
    }
}
