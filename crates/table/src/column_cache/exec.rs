//! The plan node of a scan's rows taken from the column cache.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coop::cooperative;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};

use super::Lease;

/// A scan's rows taken from the [`super::ColumnCache`]: the batches of `segments` sealed
/// segments, spread over partitions. A leaf of the plan, so that the query's statistics can
/// count the segments it answered (the SQL engine's `numSegmentsProcessed`). Its statistics
/// are unknown on purpose: exact row counts would let the planner answer or refuse a query
/// differently depending on what happens to be cached.
#[derive(Debug)]
pub struct CachedRowsExec {
    partitions: Vec<Vec<RecordBatch>>,
    schema: SchemaRef,
    segments: usize,
    rows: usize,
    /// Counts the batches' bytes against the cache's budget while the plan lives.
    _lease: Lease,
    properties: Arc<PlanProperties>,
}

impl CachedRowsExec {
    pub(crate) fn new(
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        partitions: usize,
        segments: usize,
        lease: Lease,
    ) -> Self {
        let n = partitions.clamp(1, batches.len().max(1));
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        let mut parts = vec![Vec::new(); n];
        for (i, b) in batches.into_iter().enumerate() {
            parts[i % n].push(b);
        }
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(n),
            EmissionType::Incremental,
            Boundedness::Bounded,
        )
        .with_scheduling_type(SchedulingType::Cooperative);
        CachedRowsExec {
            partitions: parts,
            schema,
            segments,
            rows,
            _lease: lease,
            properties: Arc::new(properties),
        }
    }

    /// Sealed segments whose rows this holds.
    pub fn segments(&self) -> usize {
        self.segments
    }

    /// Rows it returns (those of its segments within the scan's time bounds).
    pub fn rows(&self) -> usize {
        self.rows
    }
}

impl DisplayAs for CachedRowsExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "CachedRowsExec: segments={}, rows={}",
                self.segments, self.rows
            ),
            DisplayFormatType::TreeRender => Ok(()),
        }
    }
}

impl ExecutionPlan for CachedRowsExec {
    fn name(&self) -> &str {
        "CachedRowsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("CachedRowsExec has no children");
        }
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("CachedRowsExec has no children");
        }
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let batches = self.partitions.get(partition).cloned().ok_or_else(|| {
            DataFusionError::Internal(format!("CachedRowsExec has no partition {partition}"))
        })?;
        let stream = MemoryStream::try_new(batches, self.schema.clone(), None)?;
        Ok(Box::pin(cooperative(stream)))
    }
}
