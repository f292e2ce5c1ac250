using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Models;

/// <summary>
/// Builds a model's stages one after the other from the tensors each names: a stage's tensors are disposed once it
/// is built when they were read for it (<paramref name="disposeTensors"/>), and if a stage fails, every stage built
/// before it is disposed by <see cref="DisposeBuilt"/>.
/// </summary>
internal sealed class StageBuilder<TStage>(Func<IEnumerable<string>, IReadOnlyDictionary<string, Tensor>> source, bool disposeTensors)
    where TStage : IDisposable
{
    private readonly List<TStage> _built = [];

    public T Stage<T>(IEnumerable<string> names, Func<IReadOnlyDictionary<string, Tensor>, T> make) where T : TStage
    {
        var tensors = source(names);
        try
        {
            var stage = make(tensors);
            _built.Add(stage);
            return stage;
        }
        finally
        {
            if (disposeTensors)
            {
                foreach (var t in tensors.Values)
                {
                    t.Dispose();
                }
            }
        }
    }

    /// <summary>Runs <paramref name="build"/>; if it throws, every stage it built so far is disposed.</summary>
    public static T Build<T>(Func<IEnumerable<string>, IReadOnlyDictionary<string, Tensor>> source, bool disposeTensors, Func<StageBuilder<TStage>, T> build)
    {
        var builder = new StageBuilder<TStage>(source, disposeTensors);
        try
        {
            return build(builder);
        }
        catch
        {
            builder.DisposeBuilt();
            throw;
        }
    }

    private void DisposeBuilt()
    {
        foreach (var stage in _built)
        {
            stage.Dispose();
        }
    }
}
