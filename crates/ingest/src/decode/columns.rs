//! Arrow column builders for the rows [`super::parse`] makes: one builder per column of
//! [`order_schema`], appended in message order.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder,
    StringBuilder,
};
use datafusion::arrow::record_batch::RecordBatch;

use super::{RawOrder, Shipments};
use crate::schema::order_schema;

type StrList = ListBuilder<StringBuilder>;

/// Builders for every column of [`order_schema`], in schema order.
pub(super) struct Columns {
    order_id: StringBuilder,
    time_ms: Int64Builder,
    /// `timestamp` .. `shipping_address_zipcode` (17 string columns).
    head_strings: Vec<StringBuilder>,
    /// The nine money columns.
    money: Vec<Float64Builder>,
    /// `currency` .. `delivery_date` (10 string columns).
    mid_strings: Vec<StringBuilder>,
    fraud_flag: BooleanBuilder,
    risk_score: Int32Builder,
    /// `fulfillment_center`, `shipping_speed`, `loyalty_tier`.
    tier_strings: Vec<StringBuilder>,
    loyalty_points_used: Int32Builder,
    /// `subscription_id` .. `shipping_provider` (4 string columns).
    tail_strings: Vec<StringBuilder>,
    products_ordered: Int32Builder,
    total_quantity: Int32Builder,
    item_names: StrList,
    item_categories: StrList,
    item_qtys: ListBuilder<Int32Builder>,
    item_product_ids: StrList,
    item_prices: ListBuilder<Float64Builder>,
    item_stocks: ListBuilder<Int32Builder>,
    item_free_qtys: ListBuilder<Int32Builder>,
    coupon: StrList,
    status: StrList,
    status_id: StrList,
    status_timestamp: StrList,
    item_out_of_stock: ListBuilder<BooleanBuilder>,
    shipment_id: StrList,
    shipment_status: StrList,
    shipment_timestamp: StrList,
    shipment_tracking_number: StrList,
    shipment_items: ListBuilder<Int32Builder>,
    shipments_text: StringBuilder,
}

fn strings(n: usize, rows: usize) -> Vec<StringBuilder> {
    (0..n)
        .map(|_| StringBuilder::with_capacity(rows, rows * 16))
        .collect()
}

impl Columns {
    pub(super) fn new(rows: usize) -> Self {
        Columns {
            order_id: StringBuilder::with_capacity(rows, rows * 36),
            time_ms: Int64Builder::with_capacity(rows),
            head_strings: strings(17, rows),
            money: (0..9)
                .map(|_| Float64Builder::with_capacity(rows))
                .collect(),
            mid_strings: strings(10, rows),
            fraud_flag: BooleanBuilder::with_capacity(rows),
            risk_score: Int32Builder::with_capacity(rows),
            tier_strings: strings(3, rows),
            loyalty_points_used: Int32Builder::with_capacity(rows),
            tail_strings: strings(4, rows),
            products_ordered: Int32Builder::with_capacity(rows),
            total_quantity: Int32Builder::with_capacity(rows),
            item_names: ListBuilder::new(StringBuilder::new()),
            item_categories: ListBuilder::new(StringBuilder::new()),
            item_qtys: ListBuilder::new(Int32Builder::new()),
            item_product_ids: ListBuilder::new(StringBuilder::new()),
            item_prices: ListBuilder::new(Float64Builder::new()),
            item_stocks: ListBuilder::new(Int32Builder::new()),
            item_free_qtys: ListBuilder::new(Int32Builder::new()),
            coupon: ListBuilder::new(StringBuilder::new()),
            status: ListBuilder::new(StringBuilder::new()),
            status_id: ListBuilder::new(StringBuilder::new()),
            status_timestamp: ListBuilder::new(StringBuilder::new()),
            item_out_of_stock: ListBuilder::new(BooleanBuilder::new()),
            shipment_id: ListBuilder::new(StringBuilder::new()),
            shipment_status: ListBuilder::new(StringBuilder::new()),
            shipment_timestamp: ListBuilder::new(StringBuilder::new()),
            shipment_tracking_number: ListBuilder::new(StringBuilder::new()),
            shipment_items: ListBuilder::new(Int32Builder::new()),
            shipments_text: StringBuilder::new(),
        }
    }

    pub(super) fn push(&mut self, o: &RawOrder<'_>, shipments: &Shipments<'_>) {
        self.order_id
            .append_value(o.order_id.as_deref().unwrap_or_default());
        self.time_ms.append_value(o.time_ms.unwrap_or_default());
        let c = o.customer.as_ref();
        let b = o.billing_address.as_ref();
        let s = o.shipping_address.as_ref();
        let head: [Option<&str>; 17] = [
            o.timestamp.as_deref(),
            c.and_then(|c| c.customer_id.as_deref()),
            c.and_then(|c| c.name.as_deref()),
            c.and_then(|c| c.email.as_deref()),
            c.and_then(|c| c.phone.as_deref()),
            c.and_then(|c| c.address.as_deref()),
            c.and_then(|c| c.city.as_deref()),
            c.and_then(|c| c.state.as_deref()),
            c.and_then(|c| c.zipcode.as_deref()),
            b.and_then(|a| a.street.as_deref()),
            b.and_then(|a| a.city.as_deref()),
            b.and_then(|a| a.state.as_deref()),
            b.and_then(|a| a.zipcode.as_deref()),
            s.and_then(|a| a.street.as_deref()),
            s.and_then(|a| a.city.as_deref()),
            s.and_then(|a| a.state.as_deref()),
            s.and_then(|a| a.zipcode.as_deref()),
        ];
        for (builder, value) in self.head_strings.iter_mut().zip(head) {
            builder.append_option(value);
        }
        let money = [
            o.subtotal_before_promos,
            o.subtotal_after_coupon,
            o.shipping_cost,
            o.env_fee,
            o.tax_rate,
            o.tax_amount,
            o.order_total,
            o.partial_refund_amount,
            o.exchange_rate,
        ];
        for (builder, value) in self.money.iter_mut().zip(money) {
            builder.append_option(value);
        }
        let mid = [
            o.currency.as_deref(),
            o.payment_info.as_deref(),
            o.payment_method.as_deref(),
            o.payment_status.as_deref(),
            o.pet_name.as_deref(),
            o.shipping_status.as_deref(),
            o.delivered.as_deref(),
            o.refunded.as_deref(),
            o.expected_delivery_date.as_deref(),
            o.delivery_date.as_deref(),
        ];
        for (builder, value) in self.mid_strings.iter_mut().zip(mid) {
            builder.append_option(value);
        }
        self.fraud_flag.append_option(o.fraud_flag);
        self.risk_score.append_option(o.risk_score);
        let tier = [
            o.fulfillment_center.as_deref(),
            o.shipping_speed.as_deref(),
            o.loyalty_tier.as_deref(),
        ];
        for (builder, value) in self.tier_strings.iter_mut().zip(tier) {
            builder.append_option(value);
        }
        self.loyalty_points_used
            .append_option(o.loyalty_points_used);
        let tail = [
            o.subscription_id.as_deref(),
            o.subscription_frequency.as_deref(),
            o.tracking_number.as_deref(),
            o.shipping_provider.as_deref(),
        ];
        for (builder, value) in self.tail_strings.iter_mut().zip(tail) {
            builder.append_option(value);
        }

        let items = o.line_items.as_deref().unwrap_or_default();
        // Bounded by `check_values` (items x quantity fits an i32 by far); saturate anyway.
        self.products_ordered
            .append_value(i32::try_from(items.len()).unwrap_or(i32::MAX));
        let quantity: i64 = items
            .iter()
            .map(|i| i64::from(i.quantity.unwrap_or(0)))
            .sum();
        self.total_quantity
            .append_value(i32::try_from(quantity).unwrap_or(i32::MAX));
        for item in items {
            self.item_names
                .values()
                .append_option(item.product.name.as_deref());
            self.item_categories
                .values()
                .append_option(item.product.category.as_deref());
            self.item_qtys.values().append_option(item.quantity);
            self.item_product_ids
                .values()
                .append_option(item.product.product_id.as_deref());
            self.item_prices.values().append_option(item.product.price);
            self.item_stocks.values().append_option(item.product.stock);
            self.item_free_qtys.values().append_option(item.free_qty);
            self.item_out_of_stock
                .values()
                .append_option(item.product.out_of_stock);
        }
        self.item_out_of_stock.append(true);
        self.item_names.append(true);
        self.item_categories.append(true);
        self.item_qtys.append(true);
        self.item_product_ids.append(true);
        self.item_prices.append(true);
        self.item_stocks.append(true);
        self.item_free_qtys.append(true);

        for c in o.coupon_codes.as_deref().unwrap_or_default() {
            self.coupon.values().append_option(c.name.as_deref());
        }
        self.coupon.append(true);
        for h in o.status_history.as_deref().unwrap_or_default() {
            self.status.values().append_option(h.status.as_deref());
            self.status_id
                .values()
                .append_option(h.status_id.as_deref());
            self.status_timestamp
                .values()
                .append_option(h.timestamp.as_deref());
        }
        self.status.append(true);
        self.status_id.append(true);
        self.status_timestamp.append(true);

        let split = match shipments {
            Shipments::Split(s) => Some(s.as_slice()),
            _ => None,
        };
        for s in split.unwrap_or_default() {
            let items = s.items.as_deref().unwrap_or_default();
            self.shipment_items
                .values()
                .append_value(i32::try_from(items.len()).unwrap_or(i32::MAX));
            self.shipment_id
                .values()
                .append_option(s.shipment_id.as_deref());
            self.shipment_status
                .values()
                .append_option(s.shipment_status.as_deref());
            self.shipment_timestamp
                .values()
                .append_option(s.shipment_timestamp.as_deref());
            self.shipment_tracking_number
                .values()
                .append_option(s.tracking_number.as_deref());
        }
        let valid = split.is_some();
        self.shipment_items.append(valid);
        self.shipment_id.append(valid);
        self.shipment_status.append(valid);
        self.shipment_timestamp.append(valid);
        self.shipment_tracking_number.append(valid);
        self.shipments_text.append_option(match shipments {
            Shipments::Text(t) => Some(t.as_str()),
            _ => None,
        });
    }

    pub(super) fn finish(mut self) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(68);
        columns.push(Arc::new(self.order_id.finish()));
        columns.push(Arc::new(self.time_ms.finish()));
        columns.extend(
            self.head_strings
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.extend(
            self.money
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.extend(
            self.mid_strings
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.push(Arc::new(self.fraud_flag.finish()));
        columns.push(Arc::new(self.risk_score.finish()));
        columns.extend(
            self.tier_strings
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.push(Arc::new(self.loyalty_points_used.finish()));
        columns.extend(
            self.tail_strings
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.push(Arc::new(self.products_ordered.finish()));
        columns.push(Arc::new(self.total_quantity.finish()));
        columns.push(Arc::new(self.item_names.finish()));
        columns.push(Arc::new(self.item_categories.finish()));
        columns.push(Arc::new(self.item_qtys.finish()));
        columns.push(Arc::new(self.item_product_ids.finish()));
        columns.push(Arc::new(self.item_prices.finish()));
        columns.push(Arc::new(self.item_stocks.finish()));
        columns.push(Arc::new(self.item_free_qtys.finish()));
        columns.push(Arc::new(self.coupon.finish()));
        columns.push(Arc::new(self.status.finish()));
        columns.push(Arc::new(self.status_id.finish()));
        columns.push(Arc::new(self.status_timestamp.finish()));
        columns.push(Arc::new(self.item_out_of_stock.finish()));
        columns.push(Arc::new(self.shipment_id.finish()));
        columns.push(Arc::new(self.shipment_status.finish()));
        columns.push(Arc::new(self.shipment_timestamp.finish()));
        columns.push(Arc::new(self.shipment_tracking_number.finish()));
        columns.push(Arc::new(self.shipment_items.finish()));
        columns.push(Arc::new(self.shipments_text.finish()));
        // The builders produce exactly the schema's types, with nulls only in nullable
        // columns, so this cannot fail; a failure is a bug in this file.
        RecordBatch::try_new(order_schema(), columns)
            .unwrap_or_else(|e| panic!("decoder and schema disagree: {e}"))
    }
}
